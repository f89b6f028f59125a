// nova-gitops-check judges Nova objects the way GitOps tools do, with their own code:
//
//	nova-gitops-check HEALTH_LUA < objects.json > verdicts.json
//
// stdin holds a JSON array of objects as the apiserver returned them. For each, the output
// array holds kstatus's verdict (sigs.k8s.io/cli-utils kstatus.Compute, what Flux and
// `kubectl wait`-style tools use) and Argo CD's (the health script HEALTH_LUA, which Nova's
// chart puts in argocd-cm for every kind, run in gopher-lua with the libraries and `obj` global Argo CD gives a health script from
// argocd-cm: package, base, table and a safe os; no string or math library).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type verdict struct {
	Kind           string `json:"kind"`
	Name           string `json:"name"`
	Kstatus        string `json:"kstatus"`
	KstatusMessage string `json:"kstatusMessage"`
	Argo           string `json:"argo"`
	ArgoMessage    string `json:"argoMessage"`
}

func main() {
	if len(os.Args) == 3 && (os.Args[1] == "action" || os.Args[1] == "discover") {
		actionMain(os.Args[1], os.Args[2])
		return
	}
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: nova-gitops-check HEALTH_LUA < objects.json")
		os.Exit(2)
	}
	script, err := os.ReadFile(os.Args[1])
	if err != nil {
		fail("health script: %v", err)
	}
	var raw []json.RawMessage
	if err := json.NewDecoder(os.Stdin).Decode(&raw); err != nil {
		fail("reading objects: %v", err)
	}
	out := []verdict{}
	for i, r := range raw {
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(r); err != nil {
			fail("object %d: %v", i, err)
		}
		res, err := status.Compute(u)
		if err != nil {
			fail("kstatus of %s %s: %v", u.GetKind(), u.GetName(), err)
		}
		st, msg, err := argoHealth(u, string(script))
		if err != nil {
			fail("Argo CD health of %s %s: %v", u.GetKind(), u.GetName(), err)
		}
		out = append(out, verdict{u.GetKind(), u.GetName(), res.Status.String(), res.Message, st, msg})
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		fail("writing: %v", err)
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

// actionMain runs a custom action (`action SCRIPT`: prints the object the script returns, which
// Argo CD patches into the cluster) or an action discovery script (`discover SCRIPT`: prints
// the actions and whether each is disabled) over the one object on stdin.
func actionMain(mode, path string) {
	script, err := os.ReadFile(path)
	if err != nil {
		fail("%s: %v", path, err)
	}
	var raw json.RawMessage
	if err := json.NewDecoder(os.Stdin).Decode(&raw); err != nil {
		fail("reading the object: %v", err)
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(raw); err != nil {
		fail("the object: %v", err)
	}
	l, err := runLua(u, string(script))
	if err != nil {
		fail("%s: %v", path, err)
	}
	defer l.Close()
	out := encode(l.Get(-1))
	if mode == "action" {
		if _, ok := out.(map[string]any); !ok {
			fail("the action returned %T, not an object", out)
		}
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fail("writing: %v", err)
	}
}

// encode turns a Lua value back into JSON values, as Argo CD's luajson does.
func encode(v lua.LValue) any {
	switch c := v.(type) {
	case lua.LBool:
		return bool(c)
	case lua.LNumber:
		return float64(c)
	case lua.LString:
		return string(c)
	case *lua.LTable:
		if c.MaxN() > 0 {
			arr := []any{}
			for i := 1; i <= c.MaxN(); i++ {
				arr = append(arr, encode(c.RawGetInt(i)))
			}
			return arr
		}
		m := map[string]any{}
		c.ForEach(func(k, val lua.LValue) { m[k.String()] = encode(val) })
		return m
	}
	return nil
}

// runLua runs a script as Argo CD's util/lua VM does for a script from argocd-cm; the caller
// closes the state.
func runLua(u *unstructured.Unstructured, script string) (*lua.LState, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{{lua.LoadLibName, lua.OpenPackage}, {lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), Protect: true}, lua.LString(lib.name)); err != nil {
			l.Close()
			return nil, err
		}
	}
	safeOs(l)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", decode(l, u.Object))
	if err := l.DoString(script); err != nil {
		l.Close()
		return nil, err
	}
	l.RemoveContext()
	return l, nil
}

// argoHealth runs a health script and reads its verdict as Argo CD does.
func argoHealth(u *unstructured.Unstructured, script string) (string, string, error) {
	l, err := runLua(u, script)
	if err != nil {
		return "", "", err
	}
	defer l.Close()
	t, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return "", "", fmt.Errorf("the script returned %s, not a table", l.Get(-1).Type())
	}
	st := lua.LVAsString(t.RawGetString("status"))
	switch st {
	case "Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown":
	default:
		return "", "", fmt.Errorf("invalid health status %q (Argo CD would show Unknown)", st)
	}
	return st, lua.LVAsString(t.RawGetString("message")), nil
}

// safeOs gives the os functions Argo CD's safe os library keeps: time, date, clock, difftime.
func safeOs(l *lua.LState) {
	if err := l.CallByParam(lua.P{Fn: l.NewFunction(lua.OpenOs), Protect: true}, lua.LString(lua.OsLibName)); err != nil {
		panic(err)
	}
	full := l.GetGlobal(lua.OsLibName).(*lua.LTable)
	safe := l.NewTable()
	for _, f := range []string{"time", "date", "clock", "difftime"} {
		safe.RawSetString(f, full.RawGetString(f))
	}
	l.SetGlobal(lua.OsLibName, safe)
}

// decode turns an unstructured object into Lua values as Argo CD's decodeValue does.
func decode(l *lua.LState, v any) lua.LValue {
	switch c := v.(type) {
	case bool:
		return lua.LBool(c)
	case float64:
		return lua.LNumber(c)
	case int64:
		return lua.LNumber(c)
	case int:
		return lua.LNumber(c)
	case string:
		return lua.LString(c)
	case []any:
		t := l.CreateTable(len(c), 0)
		for _, item := range c {
			t.Append(decode(l, item))
		}
		return t
	case map[string]any:
		t := l.CreateTable(0, len(c))
		for k, item := range c {
			t.RawSetH(lua.LString(k), decode(l, item))
		}
		return t
	}
	return lua.LNil
}

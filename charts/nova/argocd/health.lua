-- Argo CD health of every nova.infra.dev kind. The chart puts this one script in argocd-cm
-- under resource.customizations.health.nova.infra.dev_<Kind> for each kind (value
-- argocd.healthChecks). It reads what Nova writes for kstatus (docs/gitops.md): Stalled True is
-- Degraded, Reconciling True or Ready False is Progressing, Ready True is Healthy; what the
-- user paused is Suspended. Argo CD gives a script from argocd-cm no string or math library,
-- so this one uses neither.
local hs = { status = "Progressing", message = "Waiting for Nova to observe this generation" }
local st = obj.status
if st == nil or st.observedGeneration == nil or st.observedGeneration ~= obj.metadata.generation then
  return hs
end
local c = {}
if st.conditions ~= nil then
  for _, cond in ipairs(st.conditions) do
    c[cond.type] = cond
  end
end
local function is(t, v)
  return c[t] ~= nil and c[t].status == v
end
local function said(t, fallback)
  if c[t] ~= nil and c[t].message ~= nil and c[t].message ~= "" then
    return c[t].message
  end
  return fallback
end
local spec = obj.spec or {}

-- What the user paused.
if obj.kind == "Backup" and spec.suspend == true then
  return { status = "Suspended", message = "spec.suspend is true: no scheduled runs" }
end
if obj.kind == "BlueGreenDeployment" and st.phase == "Paused" then
  return { status = "Suspended", message = said("Ready", "waiting for promotion") }
end
if obj.kind == "TrainingJob" and st.phase == "Paused" then
  return { status = "Suspended", message = said("Ready", "paused") }
end

-- Failing: Nova cannot go on without a change (a missing Secret, a refused spec, a failed
-- rollout, a failed run).
if is("Stalled", "True") then
  return { status = "Degraded", message = said("Stalled", "stalled") }
end
if is("Degraded", "True") then
  return { status = "Degraded", message = said("Degraded", "degraded") }
end
if obj.kind == "TlsCertificate" and st.notAfter ~= nil and st.notAfter < os.date("!%Y-%m-%dT%H:%M:%SZ") then
  return { status = "Degraded", message = "the certificate expired at " .. st.notAfter }
end
if obj.kind == "Backup" and is("ObjectivesMet", "False") then
  return { status = "Degraded", message = said("ObjectivesMet", "recovery objectives missed") }
end

if is("Reconciling", "True") then
  return { status = "Progressing", message = said("Reconciling", "reconciling") }
end
if is("Ready", "True") then
  return { status = "Healthy", message = said("Ready", "ready") }
end
if is("Ready", "False") then
  return { status = "Progressing", message = said("Ready", "not ready yet") }
end
return hs

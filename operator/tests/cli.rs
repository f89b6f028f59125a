//! The `nova` command's own conveniences: `nova version` names the commit, shell completions
//! load in a real bash and complete subcommands, and `--help` never shows a secret's value.

use std::process::Command;

use anyhow::{Result, ensure};

fn nova() -> Command {
    Command::new(env!("CARGO_BIN_EXE_nova"))
}

#[test]
fn version_names_the_commit_it_was_built_from() -> Result<()> {
    let out = nova().arg("version").output()?;
    ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout)?;
    assert!(text.starts_with(&format!("nova {} (commit ", env!("CARGO_PKG_VERSION"))), "{text}");
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()?;
    if head.status.success() {
        let head = String::from_utf8(head.stdout)?;
        assert!(text.contains(head.trim()), "{text} does not name HEAD {head}");
    }
    // `--version` says the same.
    let flag = nova().arg("--version").output()?;
    assert_eq!(String::from_utf8(flag.stdout)?, text);
    Ok(())
}

#[test]
fn bash_completion_loads_and_completes_subcommands() -> Result<()> {
    let script = format!(
        r#"source <("{nova}" completions bash) || exit 1
COMP_WORDS=(nova ro); COMP_CWORD=1; COMP_LINE="nova ro"; COMP_POINT=7
_nova nova ro nova
printf '%s\n' "${{COMPREPLY[@]}}"
COMP_WORDS=(nova backup ""); COMP_CWORD=2; COMP_LINE="nova backup "; COMP_POINT=12
_nova nova "" backup
printf '%s\n' "${{COMPREPLY[@]}}""#,
        nova = env!("CARGO_BIN_EXE_nova")
    );
    let out = Command::new("bash").args(["-c", &script]).output()?;
    ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let words: Vec<String> = String::from_utf8(out.stdout)?.split_whitespace().map(str::to_owned).collect();
    assert!(words.contains(&"rollout".to_owned()), "{words:?}");
    for sub in ["run", "list", "verify", "restore", "prune"] {
        assert!(words.contains(&sub.to_owned()), "no {sub} after `nova backup `: {words:?}");
    }
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = nova().args(["completions", shell]).output()?;
        ensure!(out.status.success() && !out.stdout.is_empty(), "{shell}");
    }
    Ok(())
}

#[test]
fn help_never_shows_a_secret_from_the_environment() -> Result<()> {
    let secret = "postgres://nova:hunter2-in-env@db/nova";
    for args in [&["operator", "--help"][..], &["apply", "--help"], &["get", "--help"]] {
        let out = nova().args(args).env("NOVA_STATE", secret).output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && !text.contains("hunter2"), "{args:?}: {text}");
    }
    Ok(())
}

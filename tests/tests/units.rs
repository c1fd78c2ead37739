//! The systemd units in `systemd/`: `systemd-analyze verify` passes on every unit, the system
//! service's `systemd-analyze security` exposure stays at or below 2.0 (the score is printed),
//! and the sysusers.d/tmpfiles.d snippets apply to a scratch root. Skipped, with a note, where
//! systemd-analyze is not installed.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};
use peerix_system_tests::bin;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok()
}

/// Copies `units` to `dir` with ExecStart pointing at the built daemon (verify checks that
/// the binary exists).
fn stage(units: &[&str], dir: &Path) -> Result<Vec<PathBuf>> {
    let daemon = bin("peerixd")?.display().to_string();
    let mut out = Vec::new();
    for u in units {
        let src = repo().join("systemd").join(u);
        let text = std::fs::read_to_string(&src).with_context(|| src.display().to_string())?;
        let name = Path::new(u).file_name().context("unit name")?;
        let dst = dir.join(name);
        std::fs::write(&dst, text.replace("/usr/bin/peerixd", &daemon))?;
        out.push(dst);
    }
    Ok(out)
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("{cmd:?} failed ({}):\n{text}", out.status);
    }
    Ok(text)
}

#[test]
fn units_verify_and_the_service_is_hardened() -> Result<()> {
    if !have("systemd-analyze") {
        eprintln!("systemd-analyze not installed: unit checks skipped");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let system = stage(&["peerixd.service", "peerixd.socket"], dir.path())?;
    run(Command::new("systemd-analyze").arg("verify").args(&system))?;

    let user_dir = dir.path().join("user");
    std::fs::create_dir(&user_dir)?;
    let user = stage(&["user/peerixd.service", "user/peerixd.socket"], &user_dir)?;
    // A user manager needs a runtime directory even offline.
    let runtime = dir.path().join("xdg");
    std::fs::create_dir(&runtime)?;
    run(Command::new("systemd-analyze")
        .args(["verify", "--user"])
        .args(&user)
        .env("XDG_RUNTIME_DIR", &runtime))?;

    let report = run(Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(&system[0]))?;
    let line = report
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .context("no exposure line")?;
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no score in {line:?}"))?;
    eprintln!("systemd-analyze security peerixd.service: {score}");
    for l in report.lines().filter(|l| l.contains('✗')) {
        eprintln!("  {}", l.split_whitespace().collect::<Vec<_>>().join(" "));
    }
    assert!(score <= 2.0, "exposure {score} above 2.0:\n{report}");

    if have("systemd-sysusers") && have("systemd-tmpfiles") {
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc"))?;
        std::fs::create_dir_all(root.join("run"))?;
        let snippets = repo().join("systemd");
        run(Command::new("systemd-sysusers")
            .arg(format!("--root={}", root.display()))
            .arg(snippets.join("sysusers.d/peerix.conf")))?;
        let group = std::fs::read_to_string(root.join("etc/group"))?;
        assert!(group.lines().any(|l| l.starts_with("peerix:")), "{group}");
        run(Command::new("systemd-tmpfiles")
            .arg(format!("--root={}", root.display()))
            .arg("--create")
            .arg(snippets.join("tmpfiles.d/peerix.conf")))?;
        assert!(root.join("run/peerix").is_dir());
    }
    Ok(())
}

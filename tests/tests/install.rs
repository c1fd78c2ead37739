//! Install: the Debian package's manifest (`[package.metadata.deb]` in daemon/Cargo.toml) ships
//! both binaries, every unit and snippet in systemd/, and the example configuration, and every
//! file it names exists. Building the .deb needs cargo-deb and a release build (README
//! "Install"); this catches a renamed or forgotten file without them.

use std::path::Path;

use anyhow::{Context, Result};

#[test]
fn deb_manifest_names_existing_files_and_every_unit() -> Result<()> {
    let daemon = Path::new(env!("CARGO_MANIFEST_DIR")).join("../daemon");
    let manifest = std::fs::read_to_string(daemon.join("Cargo.toml"))?;
    let section = manifest
        .split("[package.metadata.deb]")
        .nth(1)
        .context("daemon/Cargo.toml has [package.metadata.deb]")?;
    let assets: Vec<(String, String)> = section
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("[\""))
        .map(|l| {
            let parts: Vec<&str> = l.split('"').collect();
            (parts[1].to_string(), parts[3].to_string())
        })
        .collect();
    for (src, _) in &assets {
        if src.starts_with("target/") {
            continue;
        }
        assert!(daemon.join(src).exists(), "asset {src} does not exist");
    }
    let dest = |file: &str| {
        assets
            .iter()
            .find(|(s, _)| s.ends_with(file))
            .map(|(_, d)| d.as_str())
    };
    assert_eq!(dest("target/release/peerixd"), Some("usr/bin/"));
    assert_eq!(dest("target/release/peerix"), Some("usr/bin/"));
    assert_eq!(
        dest("config/peerixd.toml"),
        Some("usr/share/doc/peerixd/examples/")
    );
    // Every file under systemd/ is shipped.
    let root = daemon.join("../systemd");
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir)? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let rel = p
                .strip_prefix(daemon.join(".."))?
                .to_string_lossy()
                .to_string();
            assert!(
                assets.iter().any(|(s, _)| s == &format!("../{rel}")),
                "{rel} is not in the .deb"
            );
        }
    }
    assert!(daemon.join("debian/postinst").exists());
    Ok(())
}

/// The .deb itself: cargo-deb packs the binaries this build made (`--no-build`, the dev
/// profile: the suite builds no release binaries, and the package's layout does not depend on
/// the profile), dpkg installs it into a scratch root, and what dpkg lists there is what an
/// operator gets: the binaries run, the shipped example configuration passes
/// `--check-config`, and the maintainer scripts parse. The package is unpacked, not
/// configured: its postinst would create the `peerix` group on this machine (the snippets it
/// applies are checked against a scratch root in `units.rs`).
#[test]
fn deb_installs_into_a_scratch_root() -> Result<()> {
    use std::process::Command;
    let have = |cmd: &str| {
        Command::new(cmd)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !have("cargo-deb") || !have("dpkg") {
        // scripts/test-all.sh installs cargo-deb and sets this: in CI a skip would hide a
        // package that no longer builds.
        anyhow::ensure!(
            std::env::var_os("PEERIX_REQUIRE_DEB").is_none(),
            "PEERIX_REQUIRE_DEB is set but cargo-deb or dpkg is missing"
        );
        eprintln!(
            "SKIPPED: needs cargo-deb (`cargo install --locked cargo-deb@3.8.0 \
             --no-default-features`, as scripts/test-all.sh does) and dpkg"
        );
        return Ok(());
    }
    let run = |c: &mut Command| -> Result<String> {
        let out = c.output().with_context(|| format!("running {c:?}"))?;
        anyhow::ensure!(
            out.status.success(),
            "{c:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir()?;
    let deb = dir.path().join("peerixd.deb");
    run(Command::new("cargo-deb")
        .current_dir(&ws)
        .args([
            "-p",
            "peerixd",
            "--no-build",
            "--profile",
            "dev",
            "--fast",
            "-o",
        ])
        .arg(&deb))?;

    let root = dir.path().join("root");
    for d in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "var/log"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "")?;
    let root_arg = format!("--root={}", root.display());
    run(Command::new("dpkg")
        .arg(&root_arg)
        .arg("--unpack")
        .arg(&deb))?;
    let listed = run(Command::new("dpkg").args([&root_arg, "-L", "peerixd"]))?;
    eprintln!("{listed}");
    for f in [
        "/usr/bin/peerixd",
        "/usr/bin/peerix",
        "/usr/lib/systemd/system/peerixd.service",
        "/usr/lib/systemd/system/peerixd.socket",
        "/usr/lib/systemd/user/peerixd.service",
        "/usr/lib/systemd/user/peerixd.socket",
        "/usr/lib/sysusers.d/peerix.conf",
        "/usr/lib/tmpfiles.d/peerix.conf",
        "/usr/share/doc/peerixd/examples/peerixd.toml",
    ] {
        assert!(
            listed.lines().any(|l| l == f),
            "{f} not installed:\n{listed}"
        );
        assert!(root.join(&f[1..]).exists(), "{f} listed but absent");
    }
    let status = run(Command::new("dpkg").args([&root_arg, "-s", "peerixd"]))?;
    assert!(status.contains("Version: 0.1.0"), "{status}");

    let version = run(Command::new(root.join("usr/bin/peerixd")).arg("--version"))?;
    assert!(version.starts_with("peerixd 0.1.0"), "{version}");
    run(Command::new(root.join("usr/bin/peerix")).arg("--version"))?;
    let example = root.join("usr/share/doc/peerixd/examples/peerixd.toml");
    let check = Command::new(root.join("usr/bin/peerixd"))
        .args(["--no-system-config", "--check-config"])
        .arg(&example)
        .output()?;
    assert!(
        check.status.success(),
        "the shipped example does not pass --check-config: {}",
        String::from_utf8_lossy(&check.stderr)
    );

    let control = dir.path().join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control))?;
    for script in ["postinst", "postrm"] {
        run(Command::new("sh").arg("-n").arg(control.join(script)))?;
    }
    Ok(())
}

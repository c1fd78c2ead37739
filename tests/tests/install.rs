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

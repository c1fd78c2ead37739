//! The daemon binary's configuration: rooms from the file are joined at start, bad keys are named.

use std::time::Duration;

use anyhow::Result;
use peerix_system_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_and_channels_from_config_are_joined_at_start() -> Result<()> {
    let env = TestEnv::new()?;
    let conf = env.dir.path().join("peerixd.toml");
    std::fs::write(
        &conf,
        "[[rooms]]\nid = \"configured\"\nmetadata = { name = \"cfg\" }\nchannels = [\"chat\"]\n\n[room_defaults]\nconnectionTimeout = 10000\n",
    )?;
    let conf = conf.to_string_lossy().to_string();
    let da = env.daemon("a", &["--config", &conf]).await?;
    // The second daemon joins through a client and opens nothing: the label comes from a's config.
    let db = env.daemon("b", &[]).await?;
    let mut b = Member::join(&db, "configured", |_| {}).await?;
    let ev = b
        .wait_for(
            "connected to the configured daemon",
            Duration::from_secs(10),
            |e| e.name == "connection:connected",
        )
        .await?;
    assert_eq!(
        value(&ev, "metadata").map(|v| v.to_string()),
        Some(r#"{"name": "cfg"}"#.to_string())
    );
    b.wait_for("chat opened by config", Duration::from_secs(10), |e| {
        e.name == "channel:open" && field(e, "label") == Some("chat")
    })
    .await?;
    let st = da.client().await?.status().await?;
    assert_eq!(st.rooms.len(), 1);
    assert_eq!(st.rooms[0].room, "configured");
    assert_eq!(st.rooms[0].channels, vec!["chat".to_string()]);
    Ok(())
}

#[test]
fn bad_config_is_rejected_with_the_key_name() -> Result<()> {
    let env = TestEnv::new()?;
    let conf = env.dir.path().join("bad.toml");
    std::fs::write(&conf, "[webrtc]\nmdsn = true\n")?;
    let out = std::process::Command::new(bin("peerixd")?)
        .args(["--no-system-config", "--socket"])
        .arg(env.dir.path().join("x.sock"))
        .arg("--config")
        .arg(&conf)
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mdsn"), "{err}");
    // An environment override with a bad value is named too.
    let out = std::process::Command::new(bin("peerixd")?)
        .args(["--no-system-config", "--print-config"])
        .env("PEERIX_IPC__MAX_FRAME", "lots")
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max_frame"), "{err}");
    // And a good one takes effect.
    let out = std::process::Command::new(bin("peerixd")?)
        .args(["--no-system-config", "--print-config"])
        .env("PEERIX_IPC__MAX_FRAME", "1048576")
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("max_frame = 1048576"));
    Ok(())
}

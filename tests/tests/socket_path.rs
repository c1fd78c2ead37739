//! The socket path is only ever a socket: a mistyped `--socket` never removes an ordinary file
//! or trips over a directory, and two daemons started at the same instant on one path leave
//! exactly one running, with its socket intact.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use peerix_client::Client;
use peerix_system_tests::*;

fn peerixd(env: &TestEnv, socket: &Path, log: &Path) -> Result<Child> {
    env.peerixd_command(socket)?
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .spawn()
        .context("spawning peerixd")
}

/// Waits for the child to exit; its exit status and what it wrote to stderr.
fn exit_of(mut c: Child, log: &Path, within: Duration) -> Result<(bool, String)> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = c.try_wait()? {
            return Ok((status.success(), std::fs::read_to_string(log)?));
        }
        if Instant::now() > deadline {
            let _ = c.kill();
            bail!("peerixd did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_ordinary_file_is_never_removed() -> Result<()> {
    let env = TestEnv::new()?;
    let file = env.dir.path().join("notes.txt");
    std::fs::write(&file, "precious")?;
    let log = env.dir.path().join("d.log");
    let (ok, err) = exit_of(peerixd(&env, &file, &log)?, &log, Duration::from_secs(10))?;
    assert!(!ok, "refused");
    assert!(err.contains("is not a socket"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&file)?,
        "precious",
        "the file is untouched"
    );
    Ok(())
}

#[test]
fn a_directory_is_named_as_such() -> Result<()> {
    let env = TestEnv::new()?;
    let dir = env.dir.path().join("run");
    std::fs::create_dir(&dir)?;
    let log = env.dir.path().join("d.log");
    let (ok, err) = exit_of(peerixd(&env, &dir, &log)?, &log, Duration::from_secs(10))?;
    assert!(!ok);
    assert!(err.contains("is a directory"), "{err}");
    assert!(dir.is_dir());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_started_at_once_leave_exactly_one() -> Result<()> {
    let env = TestEnv::new()?;
    let socket = env.dir.path().join("one.sock");
    for round in 0..15 {
        let (la, lb) = (
            env.dir.path().join(format!("a{round}.log")),
            env.dir.path().join(format!("b{round}.log")),
        );
        let mut a = peerixd(&env, &socket, &la)?;
        let mut b = peerixd(&env, &socket, &lb)?;
        // One of them must give up, saying why; the other must keep serving.
        let deadline = Instant::now() + Duration::from_secs(15);
        let (mut survivor, loser_log) = loop {
            if a.try_wait()?.is_some() {
                break (b, la);
            }
            if b.try_wait()?.is_some() {
                break (a, lb);
            }
            if Instant::now() > deadline {
                let _ = (a.kill(), b.kill());
                bail!("round {round}: both daemons stayed up on one socket");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let err = std::fs::read_to_string(&loser_log)?;
        assert!(err.contains("another peerixd"), "round {round}: {err}");
        // The survivor's socket was not removed by the loser.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            survivor.try_wait()?.is_none(),
            "round {round}: the survivor is up"
        );
        let c = Client::connect(&socket)
            .await
            .context("the survivor answers")?;
        drop(c);
        let _ = survivor.kill();
        let _ = survivor.wait();
    }
    Ok(())
}

//! `peerix`: command-line client of the `peerixd` daemon.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use base64::Engine;
use clap::{ArgGroup, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use peerix_client::proto::rmpv::Value;
use peerix_client::proto::{event_names, MessageType, OpenArgs};
use peerix_client::{
    default_socket_path, AssembledMessage, Client, Event, JoinArgs, MessageAssembler, MessageData,
    SendOptions, SendProgress, SendResult, SOCKET_ENV,
};
use serde_json::{json, Map, Value as Json};
use sha2::{Digest, Sha256};

mod media;
mod status;
mod top;

/// Command-line client of peerixd, the Peerix peer daemon.
#[derive(Debug, Parser)]
#[command(name = "peerix", version, about)]
struct Cli {
    /// Daemon socket path (default: $PEERIX_SOCKET, $XDG_RUNTIME_DIR/peerix/peerixd.sock, /run/peerix/peerixd.sock).
    #[arg(long, global = true, env = SOCKET_ENV, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Print machine-readable JSON instead of human-readable text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Show the daemon: version, uptime, machine id, drivers, rooms, and each peer's state,
    /// path (ICE candidate types), RTT, traffic, channels and shares.
    Status,
    /// Join a room for good (returns at once; the daemon keeps the room joined after this
    /// command exits, until `peerix leave`: the room gets the persistent hold).
    Join {
        /// Room name.
        room: String,
        /// Local metadata as JSON.
        #[arg(long, value_name = "JSON")]
        meta: Option<String>,
        /// Signaling driver name.
        #[arg(long, value_name = "NAME")]
        driver: Option<String>,
    },
    /// Release the room joined with `peerix join` (its persistent hold); the room is left
    /// unless client programs still hold it.
    Leave {
        /// Room name.
        room: String,
        /// Release every hold, also those of running client programs (they are told with a
        /// `room:left` event), and leave the room.
        #[arg(long)]
        all: bool,
    },
    /// List the peers of a room.
    Peers {
        /// Room name.
        room: String,
    },
    /// Open a data channel.
    Open {
        /// Room name.
        room: String,
        /// Channel label.
        label: String,
    },
    /// Close a data channel.
    Close {
        /// Room name.
        room: String,
        /// Channel label.
        label: String,
    },
    /// Send a message (text, a file or a JSON value), or standard input line by line, and print
    /// the delivery result.
    #[command(group(
        ArgGroup::new("payload").required(true).args(["text", "file", "json_value", "lines"])
    ))]
    Send {
        /// Room name.
        room: String,
        /// Channel label.
        label: String,
        /// Text to send.
        text: Option<String>,
        /// Stream this file as bytes.
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
        /// Send this JSON value (json message type).
        #[arg(long, value_name = "JSON")]
        json_value: Option<String>,
        /// Send each line of standard input as a text message of its own (a pipe of log lines
        /// or telemetry): the lines that arrived while the previous batch was out go in one
        /// request. Ends at the end of input.
        #[arg(long)]
        lines: bool,
        /// Send to this peer only.
        #[arg(long, value_name = "PEER")]
        to: Option<String>,
    },
    /// Forward the RTP of a track a peer shares to a local UDP address, with an SDP file for
    /// ffplay, VLC or GStreamer.
    Forward(media::ForwardCmd),
    /// Share media with a room from a local RTP sender (ffmpeg, GStreamer, OBS): one port per
    /// track, fanned out to every peer.
    Share(media::ShareCmd),
    /// Stop sharing a label.
    Unshare {
        /// Room name.
        room: String,
        /// The label.
        label: String,
    },
    /// A live view of the mesh: peers per room, state, path, RTT and rates, refreshed every
    /// second (q quits); one text frame with `--once` or when stdout is not a terminal.
    Top(top::TopCmd),
    /// Print events until interrupted.
    Events {
        /// Only events of this room (plus daemon-level events).
        #[arg(long)]
        room: Option<String>,
        /// Comma-separated event patterns, e.g. `connection,channel:message` (default `*`).
        #[arg(long, value_delimiter = ',', value_name = "PATTERNS")]
        filter: Vec<String>,
        /// Write received bytes/blob messages into this directory.
        #[arg(long, value_name = "DIR")]
        save_dir: Option<PathBuf>,
        /// Resume: first print the kept events after this seq (the last one printed before),
        /// or a `lagged` event for those that are gone.
        #[arg(long, value_name = "SEQ")]
        since: Option<u64>,
        /// The daemon epoch `--since` was seen under (`welcome.epoch`, `status.epoch`).
        #[arg(long, value_name = "EPOCH", requires = "since")]
        epoch: Option<u64>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("peerix: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let path = cli.socket.clone().unwrap_or_else(default_socket_path);
    let client = Client::connect_as(&path, concat!("peerix-cli/", env!("CARGO_PKG_VERSION")))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let json = cli.json;
    match cli.cmd {
        Cmd::Status => {
            let snap = status::Snapshot::read(&client).await?;
            if json {
                print_json(&snap.to_json()?);
            } else {
                print!("{}", status::render(&snap));
            }
        }
        Cmd::Join { room, meta, driver } => {
            let metadata = meta.map(|m| parse_json_arg(&m, "--meta")).transpose()?;
            let res = client
                .join(JoinArgs {
                    room,
                    metadata,
                    driver,
                    options: None,
                    // The room outlives this command, as it always did.
                    persist: true,
                })
                .await
                .context("join failed")?;
            if json {
                print_json(
                    &json!({"room": res.room, "id": res.id, "metadata": to_json(&res.metadata),
                        "holders": res.holders, "persist": res.persist}),
                );
            } else {
                println!("joined {} as {}", res.room, res.id);
            }
        }
        Cmd::Leave { room, all } => {
            let res = if all {
                client.leave_all(&room).await
            } else {
                client.leave(&room).await
            }
            .context("leave failed")?;
            if json {
                print_json(&json!({"left": res.left, "holders": res.holders}));
            } else if res.left {
                println!("left {room}");
            } else {
                println!(
                    "released {room}; {} client connection(s) still hold it (--all leaves it for them too)",
                    res.holders
                );
            }
        }
        Cmd::Peers { room } => {
            let peers = client.peers(&room).await.context("peers failed")?;
            if json {
                let list: Vec<Json> = peers
                    .iter()
                    .map(|p| {
                        json!({"id": p.id, "state": p.state, "metadata": to_json(&p.metadata), "channels": p.channels})
                    })
                    .collect();
                print_json(&json!({ "peers": list }));
            } else if peers.is_empty() {
                println!("no peers in {room}");
            } else {
                for p in &peers {
                    println!(
                        "{}  {}  channels: {}  metadata: {}",
                        p.id,
                        p.state,
                        p.channels.join(","),
                        to_json(&p.metadata)
                    );
                }
            }
        }
        Cmd::Open { room, label } => {
            client
                .open(OpenArgs::new(room.as_str(), label.as_str()))
                .await
                .context("open failed")?;
            done(json, &format!("opened {label} in {room}"));
        }
        Cmd::Close { room, label } => {
            client
                .close(&room, &label, None)
                .await
                .context("close failed")?;
            done(json, &format!("closed {label} in {room}"));
        }
        Cmd::Send {
            room,
            label,
            text,
            file,
            json_value,
            lines,
            to,
        } => {
            let opts = SendOptions { to, info: None };
            if lines {
                return send_lines(&client, &room, &label, opts, json).await;
            }
            let res = if let Some(text) = text {
                client.send_text(&room, &label, &text, opts).await
            } else if let Some(v) = json_value {
                let v = parse_json_arg(&v, "--json-value")?;
                client.send_json(&room, &label, v, opts).await
            } else if let Some(path) = file {
                return send_file(&client, &room, &label, &path, opts, json).await;
            } else {
                bail!("nothing to send");
            }
            .context("send failed")?;
            return Ok(print_send_result(&res, json));
        }
        Cmd::Top(a) => return top::top(&client, a).await,
        Cmd::Forward(a) => return media::forward(&client, a, json).await,
        Cmd::Share(a) => return media::share(&client, a, json).await,
        Cmd::Unshare { room, label } => return media::unshare(&client, &room, &label, json).await,
        Cmd::Events {
            room,
            filter,
            save_dir,
            since,
            epoch,
        } => {
            let resume = since.map(|s| (s, epoch));
            return events(&client, room, filter, save_dir, resume, json).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn done(json: bool, msg: &str) {
    if json {
        print_json(&json!({}));
    } else {
        println!("{msg}");
    }
}

fn print_json(v: &Json) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, v);
    let _ = writeln!(out);
    let _ = out.flush();
}

fn parse_json_arg(s: &str, flag: &str) -> Result<Value> {
    let j: Json = serde_json::from_str(s).with_context(|| format!("{flag} is not valid JSON"))?;
    Ok(from_json(&j))
}

/// JSON → MessagePack value.
fn from_json(j: &Json) -> Value {
    match j {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => {
            if let Some(u) = n.as_u64() {
                Value::from(u)
            } else if let Some(i) = n.as_i64() {
                Value::from(i)
            } else {
                Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Json::String(s) => Value::from(s.as_str()),
        Json::Array(a) => Value::Array(a.iter().map(from_json).collect()),
        Json::Object(o) => Value::Map(
            o.iter()
                .map(|(k, v)| (Value::from(k.as_str()), from_json(v)))
                .collect(),
        ),
    }
}

/// MessagePack value → JSON (bin becomes a base64 string).
fn to_json(v: &Value) -> Json {
    match v {
        Value::Nil => Json::Null,
        Value::Boolean(b) => Json::Bool(*b),
        Value::Integer(i) => i
            .as_u64()
            .map(Json::from)
            .or_else(|| i.as_i64().map(Json::from))
            .unwrap_or(Json::Null),
        Value::F32(f) => Json::from(f64::from(*f)),
        Value::F64(f) => Json::from(*f),
        Value::String(s) => Json::String(
            s.as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| String::from_utf8_lossy(s.as_bytes()).into_owned()),
        ),
        Value::Binary(b) => Json::String(base64::engine::general_purpose::STANDARD.encode(b)),
        Value::Array(a) => Json::Array(a.iter().map(to_json).collect()),
        Value::Map(m) => Json::Object(
            m.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Value::String(s) => s.as_str().unwrap_or_default().to_owned(),
                        other => other.to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Value::Ext(_, b) => Json::String(base64::engine::general_purpose::STANDARD.encode(b)),
    }
}

/// `send --lines`: standard input's lines as text messages, in batches of what has arrived.
/// Prints each line that did not reach a peer, then a summary; exit code 2 if any did not.
async fn send_lines(
    client: &Client,
    room: &str,
    label: &str,
    opts: SendOptions,
    json: bool,
) -> Result<ExitCode> {
    /// Lines read ahead of the batch being sent.
    const AHEAD: usize = 4096;
    /// At most this many bytes of lines per batch (well below any daemon's `max_frame`).
    const BATCH_BYTES: usize = 1 << 20;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(AHEAD);
    let reader = tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Some(line) = lines
            .next_line()
            .await
            .context("reading standard input (lines must be UTF-8 text)")?
        {
            if tx.send(line).await.is_err() {
                break;
            }
        }
        anyhow::Ok(())
    });
    let (mut sent, mut failed) = (0u64, 0u64);
    while let Some(first) = rx.recv().await {
        let mut bytes = first.len();
        let mut batch = vec![first];
        while batch.len() < peerix_client::MAX_BATCH && bytes < BATCH_BYTES {
            let Ok(line) = rx.try_recv() else { break };
            bytes += line.len();
            batch.push(line);
        }
        let n = batch.len() as u64;
        let r = client
            .send_batch_text(room, label, batch, opts.clone())
            .await
            .with_context(|| format!("sending lines {}-{}", sent + 1, sent + n))?;
        for p in &r.peers {
            for f in &p.failed {
                failed += 1;
                let line = sent + f.index + 1;
                if json {
                    print_json(&json!({"line": line, "peer": p.id, "error": {
                        "code": f.error.code.as_str(), "message": f.error.message}}));
                } else {
                    println!("line {line}: FAILED for {}: {}", p.id, f.error);
                }
            }
        }
        sent += n;
    }
    reader
        .await
        .context("the standard input reader stopped")??;
    if json {
        print_json(&json!({"lines": sent, "failed": failed}));
    } else {
        println!("{sent} lines sent, {failed} not delivered");
    }
    Ok(if failed > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_send_result(res: &SendResult, json: bool) -> ExitCode {
    let peers = res.peers.clone().unwrap_or_default();
    let failed = peers.iter().any(|p| !p.ok);
    if json {
        let list: Vec<Json> = peers
            .iter()
            .map(|p| {
                let mut o = json!({"id": p.id, "ok": p.ok});
                if let Some(e) = &p.error {
                    o["error"] = json!({"code": e.code.as_str(), "message": e.message});
                }
                o
            })
            .collect();
        print_json(&json!({"transfer": res.transfer, "peers": list}));
    } else if peers.is_empty() {
        println!("transfer {}: no peers to deliver to", res.transfer);
    } else {
        for p in &peers {
            match &p.error {
                None if p.ok => println!("transfer {}: delivered to {}", res.transfer, p.id),
                Some(e) => println!("transfer {}: FAILED for {}: {e}", res.transfer, p.id),
                None => println!("transfer {}: FAILED for {}", res.transfer, p.id),
            }
        }
    }
    if failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

async fn send_file(
    client: &Client,
    room: &str,
    label: &str,
    path: &Path,
    mut opts: SendOptions,
    json: bool,
) -> Result<ExitCode> {
    let file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("cannot open {}", path.display()))?;
    let size = file
        .metadata()
        .await
        .with_context(|| format!("cannot stat {}", path.display()))?
        .len();
    if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
        opts.info = Some(Value::Map(vec![
            (Value::from("name"), Value::from(name)),
            (Value::from("size"), Value::from(size)),
        ]));
    }
    let bar = if json {
        ProgressBar::hidden()
    } else {
        let bar =
            ProgressBar::with_draw_target(Some(size), indicatif::ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(format!("sending {}", path.display()));
        bar
    };
    let res = client
        .send_stream(room, label, file, Some(size), opts, |p| match p {
            SendProgress::Buffered { sent, .. } => bar.set_position(*sent),
            SendProgress::Delivery(_) => {}
        })
        .await;
    bar.finish_and_clear();
    let res = res.with_context(|| format!("sending {} failed", path.display()))?;
    Ok(print_send_result(&res, json))
}

async fn events(
    client: &Client,
    room: Option<String>,
    filter: Vec<String>,
    save_dir: Option<PathBuf>,
    resume: Option<(u64, Option<u64>)>,
    json: bool,
) -> Result<ExitCode> {
    let patterns: Vec<String> = if filter.is_empty() {
        vec!["*".into()]
    } else {
        filter
            .into_iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    };
    let refs: Vec<&str> = patterns.iter().map(String::as_str).collect();
    if let Some(dir) = &save_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut rx = match resume {
        None => client
            .subscribe(&refs, room.as_deref())
            .await
            .context("subscribe failed")?,
        Some((since, epoch)) => {
            let (rx, res) = client
                .subscribe_since(&refs, room.as_deref(), since, epoch)
                .await
                .context("subscribe failed")?;
            if !res.complete {
                eprintln!("peerix: some events after seq {since} are gone (see the lagged event)");
            }
            rx
        }
    };
    let mut asm = MessageAssembler::new();
    loop {
        let ev = tokio::select! {
            ev = rx.recv() => ev,
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        };
        let Some(ev) = ev else {
            bail!("connection to peerixd closed");
        };
        if ev.name == event_names::CHANNEL_MESSAGE {
            match asm.push_owned(ev) {
                Ok(Some(msg)) => print_message(&msg, save_dir.as_deref(), json)?,
                Ok(None) => {}
                Err(e) => eprintln!("peerix: warning: {e}"),
            }
        } else {
            if ev.name == event_names::CONNECTION_CLOSED {
                if let Ok(peer) = ev.data_as::<peerix_client::proto::ConnectionEventData>() {
                    asm.forget_peer(&peer.peer);
                }
            }
            print_event(&ev, json);
        }
    }
}

fn print_event(ev: &Event, json: bool) {
    if json {
        let mut o = Map::new();
        o.insert("seq".into(), json!(ev.seq));
        o.insert("name".into(), json!(ev.name));
        o.insert("room".into(), json!(ev.room));
        if let Json::Object(data) = to_json(&ev.data) {
            for (k, v) in data {
                o.entry(k).or_insert(v);
            }
        }
        print_json(&Json::Object(o));
    } else {
        let room = ev.room.as_deref().unwrap_or("-");
        let mut fields = Vec::new();
        if let Value::Map(m) = &ev.data {
            for (k, v) in m {
                let k = k.as_str().unwrap_or("?");
                let v = match v {
                    Value::String(s) => s.as_str().unwrap_or("?").to_owned(),
                    other => to_json(other).to_string(),
                };
                fields.push(format!("{k}={v}"));
            }
        }
        println!("[{}] {room} {} {}", ev.seq, ev.name, fields.join(" "));
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(64)
        .collect()
}

fn save(dir: &Path, msg: &AssembledMessage, bytes: &[u8]) -> Result<PathBuf> {
    let base = format!("transfer-{}-{}", msg.transfer, sanitize(&msg.peer));
    let mut path = dir.join(format!("{base}.bin"));
    let mut n = 1;
    while path.exists() {
        path = dir.join(format!("{base}.{n}.bin"));
        n += 1;
    }
    std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

fn kind_name(k: MessageType) -> &'static str {
    match k {
        MessageType::Text => "text",
        MessageType::Json => "json",
        MessageType::Blob => "blob",
        MessageType::Bytes => "bytes",
    }
}

fn print_message(msg: &AssembledMessage, save_dir: Option<&Path>, json: bool) -> Result<()> {
    let mut saved: Option<(PathBuf, String)> = None;
    if let (Some(dir), MessageData::Bytes(b)) = (save_dir, &msg.data) {
        let path = save(dir, msg, b)?;
        saved = Some((path, hex::encode(Sha256::digest(b))));
    }
    let room = msg.room.as_deref().unwrap_or("-");
    if json {
        let mut o = json!({
            "seq": msg.seq,
            "name": event_names::CHANNEL_MESSAGE,
            "room": msg.room,
            "peer": msg.peer,
            "id": msg.peer,
            "label": msg.label,
            "type": kind_name(msg.kind),
            "transfer": msg.transfer,
            "final": true,
            "parts": msg.parts,
        });
        if let Some(info) = &msg.info {
            o["info"] = to_json(info);
        }
        match (&msg.data, &saved) {
            (_, Some((path, sha))) => {
                o["path"] = json!(path.display().to_string());
                o["sha256"] = json!(sha);
                if let MessageData::Bytes(b) = &msg.data {
                    o["size"] = json!(b.len());
                }
            }
            (MessageData::Text(t), None) => o["data"] = json!(t),
            (MessageData::Json(v), None) => o["data"] = to_json(v),
            (MessageData::Bytes(b), None) => {
                o["data"] = json!(base64::engine::general_purpose::STANDARD.encode(b));
                o["encoding"] = json!("base64");
            }
        }
        print_json(&o);
    } else {
        let head = format!(
            "[{}] {room} channel:message from {} on {}",
            msg.seq, msg.peer, msg.label
        );
        match (&msg.data, &saved) {
            (_, Some((path, sha))) => {
                println!("{head}: saved {} (sha256 {sha})", path.display())
            }
            (MessageData::Text(t), None) => println!("{head}: {t}"),
            (MessageData::Json(v), None) => println!("{head}: {}", to_json(v)),
            (MessageData::Bytes(b), None) => println!(
                "{head}: {} {} bytes (sha256 {})",
                kind_name(msg.kind),
                b.len(),
                hex::encode(Sha256::digest(b))
            ),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_conversion_roundtrip() {
        let j: Json = serde_json::from_str(r#"{"a":[1,-2,1.5,"x",null,true]}"#).expect("json");
        assert_eq!(to_json(&from_json(&j)), j);
        assert_eq!(to_json(&Value::Binary(vec![1, 2, 3])), json!("AQID"));
    }

    #[test]
    fn cli_parses() {
        let cli = Cli::try_parse_from(["peerix", "--json", "send", "r", "l", "--file", "/x"])
            .expect("parse");
        assert!(cli.json);
        assert!(Cli::try_parse_from(["peerix", "send", "r", "l"]).is_err());
        assert!(Cli::try_parse_from(["peerix", "send", "r", "l", "hi", "--file", "/x"]).is_err());
        let cli =
            Cli::try_parse_from(["peerix", "events", "--filter", "connection,channel:message"])
                .expect("parse");
        match cli.cmd {
            Cmd::Events { filter, .. } => assert_eq!(filter, vec!["connection", "channel:message"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn events_resume_from_a_seq() {
        let cli = Cli::try_parse_from(["peerix", "events", "--since", "41", "--epoch", "7"])
            .expect("parse");
        match cli.cmd {
            Cmd::Events { since, epoch, .. } => assert_eq!((since, epoch), (Some(41), Some(7))),
            other => panic!("{other:?}"),
        }
        assert!(
            Cli::try_parse_from(["peerix", "events", "--epoch", "7"]).is_err(),
            "--epoch only says which run --since is from"
        );
    }

    #[test]
    fn sanitize_peer_names() {
        assert_eq!(sanitize("../../etc/passwd"), "etcpasswd");
    }
}

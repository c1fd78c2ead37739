//! `peerix top`: a live terminal view of the mesh (peers per room, state, path, RTT and
//! traffic rates), refreshed from `status` and `peers` once a second. With `--once`, or
//! when stdout is not a terminal, it prints one frame as text instead.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use peerix_client::Client;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Table};
use ratatui::DefaultTerminal;

use crate::status::{driver_state, fmt_bytes, fmt_rate, fmt_rtt, fmt_uptime, table, Snapshot};

/// Arguments of `peerix top`.
#[derive(Debug, Args)]
pub(crate) struct TopCmd {
    /// Print one frame as text and exit (also the behaviour when stdout is not a terminal);
    /// rates are measured over one interval.
    #[arg(long)]
    once: bool,
    /// Refresh interval in milliseconds.
    #[arg(long, default_value_t = 1000, value_name = "MS", value_parser = clap::value_parser!(u64).range(100..=60_000))]
    interval: u64,
}

const COLUMNS: [&str; 9] = [
    "ROOM", "PEER", "STATE", "PATH", "RTT", "IN/s", "OUT/s", "IN", "OUT",
];

/// Byte counters of the previous sample, by (room, peer), to turn totals into rates.
#[derive(Default)]
struct Sampler {
    prev: HashMap<(String, String), (u64, u64)>,
    at: Option<Instant>,
}

/// One frame: the header line and the table rows.
struct Frame {
    header: String,
    rows: Vec<[String; 9]>,
}

impl Sampler {
    /// Reads a snapshot and makes a frame; rates are `-` for peers first seen now.
    async fn frame(&mut self, client: &Client) -> Result<Frame> {
        let snap = Snapshot::read(client).await?;
        let now = Instant::now();
        let since = self.at.map(|t| now.duration_since(t));
        let mut next = HashMap::new();
        let mut rows = Vec::new();
        for (room, peers) in snap.status.rooms.iter().zip(&snap.peers) {
            if peers.is_empty() {
                let mut row: [String; 9] = Default::default();
                row[0] = room.room.clone();
                row[1] = "(no peers)".into();
                rows.push(row);
            }
            for p in peers {
                let key = (room.room.clone(), p.id.clone());
                let (path, rtt, rate_in, rate_out, total_in, total_out) = match &p.stats {
                    Some(s) => {
                        let rate = |now: u64, before: Option<u64>| match (before, since) {
                            (Some(b), Some(d)) => fmt_rate(now.saturating_sub(b), d),
                            _ => "-".to_string(),
                        };
                        let prev = self.prev.get(&key).copied();
                        next.insert(key.clone(), (s.bytes_in, s.bytes_out));
                        (
                            s.path(),
                            fmt_rtt(s.rtt),
                            rate(s.bytes_in, prev.map(|p| p.0)),
                            rate(s.bytes_out, prev.map(|p| p.1)),
                            fmt_bytes(s.bytes_in),
                            fmt_bytes(s.bytes_out),
                        )
                    }
                    None => Default::default(),
                };
                rows.push([
                    room.room.clone(),
                    short_id(&p.id),
                    p.state.clone(),
                    path,
                    rtt,
                    rate_in,
                    rate_out,
                    total_in,
                    total_out,
                ]);
            }
        }
        self.prev = next;
        self.at = Some(now);
        let st = &snap.status;
        let drivers: Vec<String> = st
            .drivers
            .iter()
            .map(|d| format!("{} {}", d.name, driver_state(d)))
            .collect();
        let header = format!(
            "peerixd {}  up {}  machine {}  drivers: {}",
            st.version,
            fmt_uptime(st.uptime),
            short_id(&st.id),
            drivers.join(", ")
        );
        Ok(Frame { header, rows })
    }
}

/// Ids are 44 characters: the first 12 tell peers apart at a glance.
fn short_id(id: &str) -> String {
    match id.char_indices().nth(12) {
        Some((i, _)) => format!("{}…", &id[..i]),
        None => id.to_string(),
    }
}

/// Runs `peerix top`.
pub(crate) async fn top(client: &Client, args: TopCmd) -> Result<ExitCode> {
    let interval = Duration::from_millis(args.interval);
    let mut sampler = Sampler::default();
    if args.once || !std::io::stdout().is_terminal() {
        // Two samples, so the rates cover one interval.
        sampler.frame(client).await?;
        tokio::time::sleep(interval).await;
        let f = sampler.frame(client).await?;
        let mut out = format!("{}\n\n", f.header);
        let rows: Vec<Vec<String>> = f.rows.into_iter().map(Vec::from).collect();
        table(&mut out, &COLUMNS, &rows);
        print!("{out}");
        return Ok(ExitCode::SUCCESS);
    }
    let mut terminal = ratatui::try_init().context("cannot set up the terminal")?;
    let res = live(&mut terminal, client, &mut sampler, interval).await;
    ratatui::restore();
    res.map(|()| ExitCode::SUCCESS)
}

async fn live(
    terminal: &mut DefaultTerminal,
    client: &Client,
    sampler: &mut Sampler,
    interval: Duration,
) -> Result<()> {
    let mut frame = sampler.frame(client).await?;
    let mut next = Instant::now() + interval;
    loop {
        terminal.draw(|f| draw(f, &frame))?;
        let wait = next.saturating_duration_since(Instant::now());
        // crossterm's poll blocks: keep it off the runtime's threads.
        let key = tokio::task::spawn_blocking(move || -> std::io::Result<Option<Event>> {
            if event::poll(wait)? {
                event::read().map(Some)
            } else {
                Ok(None)
            }
        })
        .await??;
        if let Some(Event::Key(k)) = key {
            let ctrl_c =
                k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
            if k.kind == KeyEventKind::Press
                && (matches!(k.code, KeyCode::Char('q') | KeyCode::Esc) || ctrl_c)
            {
                return Ok(());
            }
        }
        if Instant::now() >= next {
            frame = sampler.frame(client).await?;
            next = Instant::now() + interval;
        }
    }
}

fn draw(f: &mut ratatui::Frame, frame: &Frame) {
    let [head, body] =
        Layout::vertical([Constraint::Length(2), Constraint::Min(0)]).areas(f.area());
    f.render_widget(
        Paragraph::new(vec![
            Line::from(frame.header.as_str()),
            Line::from("q: quit").style(Style::default().fg(Color::DarkGray)),
        ]),
        head,
    );
    let rows = frame.rows.iter().map(|r| {
        let style = match r[2].as_str() {
            "connected" => Style::default().fg(Color::Green),
            "failed" | "closed" | "disconnected" => Style::default().fg(Color::Red),
            "" => Style::default().fg(Color::DarkGray),
            _ => Style::default().fg(Color::Yellow),
        };
        Row::new(r.iter().map(String::as_str)).style(style)
    });
    let widths = [
        Constraint::Min(8),
        Constraint::Length(14),
        Constraint::Length(12),
        Constraint::Length(12),
        Constraint::Length(9),
        Constraint::Length(11),
        Constraint::Length(11),
        Constraint::Length(10),
        Constraint::Length(10),
    ];
    let table = Table::new(rows, widths)
        .header(Row::new(COLUMNS).style(Style::default().add_modifier(Modifier::BOLD)))
        .block(Block::bordered().title(" mesh "));
    f.render_widget(table, body);
}

//! A forwarding TCP proxy to PostgreSQL that a test controls: [`Proxy::cut`] closes every
//! proxied connection and refuses new ones until [`Proxy::restore`]; [`Proxy::lose_next_commit`]
//! lets the next `COMMIT` reach the server but closes the connection before the server's reply
//! gets back (the commit happened; the client cannot know). Only std, so the daemon's own
//! end-to-end tests include it too (`#[path]`).
#![allow(dead_code)] // Each test binary uses a different part of it.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// The proxy. Dropping it closes everything.
pub struct Proxy {
    pub port: u16,
    up: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    lose_commit: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
    pub accepted: Arc<AtomicU64>,
    pub refused: Arc<AtomicU64>,
    /// Commits whose reply was dropped.
    pub lost_commits: Arc<AtomicU64>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub fn start(upstream: (String, u16)) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let proxy = Proxy {
            port,
            up: Arc::new(AtomicBool::new(true)),
            stop: Arc::new(AtomicBool::new(false)),
            lose_commit: Arc::new(AtomicBool::new(false)),
            streams: Arc::default(),
            accepted: Arc::default(),
            refused: Arc::default(),
            lost_commits: Arc::default(),
        };
        let up = Arc::clone(&proxy.up);
        let stop = Arc::clone(&proxy.stop);
        let lose = Arc::clone(&proxy.lose_commit);
        let lost = Arc::clone(&proxy.lost_commits);
        let streams = Arc::clone(&proxy.streams);
        let accepted = Arc::clone(&proxy.accepted);
        let refused = Arc::clone(&proxy.refused);
        thread::spawn(move || {
            for client in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                if !up.load(Ordering::SeqCst) {
                    // "Refused": closed before a byte is exchanged.
                    refused.fetch_add(1, Ordering::SeqCst);
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect((upstream.0.as_str(), upstream.1)) else {
                    continue;
                };
                accepted.fetch_add(1, Ordering::SeqCst);
                {
                    let mut s = streams.lock().expect("lock");
                    s.extend(client.try_clone());
                    s.extend(server.try_clone());
                }
                // Set once this connection's COMMIT went out unanswered: the server's bytes are
                // no longer relayed.
                let muted = Arc::new(AtomicBool::new(false));
                let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                let (lose, lost, m) = (Arc::clone(&lose), Arc::clone(&lost), Arc::clone(&muted));
                thread::spawn(move || relay(client, server, Some((lose, lost, m))));
                thread::spawn(move || relay_muted(s2, c2, muted));
            }
        });
        proxy
    }

    /// Closes every proxied connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for s in self.streams.lock().expect("lock").drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    /// The next `COMMIT` a writer lane sends (on a connection that has sent a `COPY`) reaches the
    /// server; then that connection is closed without the server's reply.
    pub fn lose_next_commit(&self) {
        self.lose_commit.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cut();
        // Wake the accept loop so it sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

type CommitTrap = (Arc<AtomicBool>, Arc<AtomicU64>, Arc<AtomicBool>);

/// Client to server. With a trap armed, a read holding a simple-query `COMMIT` on a connection
/// that has sent a `COPY` is forwarded, the reply direction muted, and both sides closed once
/// the server had time to commit.
fn relay(mut from: TcpStream, mut to: TcpStream, trap: Option<CommitTrap>) {
    const COMMIT: &[u8] = b"COMMIT\0";
    let mut buf = vec![0u8; 64 << 10];
    // The end of the previous read: a `COMMIT` split across two reads is still seen.
    let mut tail: Vec<u8> = Vec::with_capacity(2 * COMMIT.len());
    // Only a connection that has sent a COPY (a writer lane's) is trapped: the sink's rollup and
    // retention threads commit too, and losing their reply is not what a test arms the trap for.
    let mut copied = false;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        copied = copied || contains(&buf[..n], b"COPY ");
        let commit = trap.as_ref().is_some_and(|(armed, _, _)| {
            copied && armed.load(Ordering::SeqCst) && {
                let head = &buf[..n.min(COMMIT.len() - 1)];
                tail.extend_from_slice(head);
                contains(&tail, COMMIT) || contains(&buf[..n], COMMIT)
            }
        });
        tail.clear();
        tail.extend_from_slice(&buf[n.saturating_sub(COMMIT.len() - 1)..n]);
        if let Some((armed, lost, muted)) = trap.as_ref().filter(|_| commit) {
            muted.store(true, Ordering::SeqCst);
            armed.store(false, Ordering::SeqCst);
            let _ = to.write_all(&buf[..n]);
            thread::sleep(Duration::from_millis(500));
            lost.fetch_add(1, Ordering::SeqCst);
            break;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

/// Server to client, dropping everything once `muted`.
fn relay_muted(mut from: TcpStream, mut to: TcpStream, muted: Arc<AtomicBool>) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if muted.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

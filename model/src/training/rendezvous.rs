//! How the processes of a data-parallel job find each other: rank 0 makes
//! NCCL's unique id (128 bytes) and every other rank must receive it before
//! `ncclCommInitRank`. Two ways:
//!
//! - **TCP** (torchrun, SLURM, `srmae launch --nnodes`): rank 0 listens on
//!   `MASTER_ADDR:MASTER_PORT`; every other rank connects (retrying until the
//!   timeout), says its rank, and receives the id. Rank 0 waits until every
//!   rank has arrived, or fails naming the ranks that did not; a rank that
//!   cannot reach rank 0 fails naming itself and the address. No shared
//!   filesystem is needed.
//! - **File** (`srmae launch` on one machine): rank 0 writes the id to a file
//!   (temporary file + rename), the others poll for it.
//!
//! The exchange moves bytes only, so it is tested on the CPU; NCCL remains
//! what reduces the gradients.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::{Duration, Instant};

/// Bytes of NCCL's unique id.
pub const ID_BYTES: usize = 128;

/// A magic number that starts every message (a stray connection is refused).
const MAGIC: u32 = 0x5352_4d41; // "SRMA"

#[derive(Debug, thiserror::Error)]
pub enum RendezvousError {
    #[error("rank 0: cannot listen on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
    #[error("rank 0: ranks {missing:?} of {world} did not arrive within {timeout:?} (are they started, with the same MASTER_ADDR/MASTER_PORT?)")]
    Missing { missing: Vec<usize>, world: usize, timeout: Duration },
    #[error("rank {rank}: cannot reach rank 0 at {addr} within {timeout:?}: {last}")]
    Unreachable { rank: usize, addr: String, timeout: Duration, last: String },
    #[error("rank {rank}: {what}: {source}")]
    Io { rank: usize, what: &'static str, source: std::io::Error },
    #[error("rank 0: a connection that is not a rank of this job ({0})")]
    Stranger(String),
    #[error("rank {rank}: rank 0 did not publish {path} within {timeout:?}")]
    NoIdFile { rank: usize, path: String, timeout: Duration },
    #[error("rank 0: {path}: {source}")]
    IdFile { path: String, source: std::io::Error },
}

fn read_u32(s: &mut TcpStream) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    s.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

/// Rank 0: accepts the other `world - 1` ranks on `listener` and sends each
/// `id`. Fails naming the ranks missing after `timeout`.
pub fn serve(listener: &TcpListener, world: usize, id: &[u8; ID_BYTES], timeout: Duration) -> Result<(), RendezvousError> {
    let io = |what, source| RendezvousError::Io { rank: 0, what, source };
    listener.set_nonblocking(true).map_err(|e| io("listener", e))?;
    let start = Instant::now();
    let mut arrived = vec![false; world];
    arrived[0] = true;
    while arrived.iter().any(|a| !a) {
        match listener.accept() {
            Ok((mut s, peer)) => {
                s.set_nonblocking(false).map_err(|e| io("accepting", e))?;
                s.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| io("accepting", e))?;
                let hello = read_u32(&mut s).and_then(|m| Ok((m, read_u32(&mut s)?)));
                let rank = match hello {
                    Ok((MAGIC, r)) if (r as usize) < world && r != 0 => r as usize,
                    Ok((m, r)) => return Err(RendezvousError::Stranger(format!("{peer}: magic {m:#x}, rank {r}"))),
                    Err(e) => return Err(RendezvousError::Stranger(format!("{peer}: {e}"))),
                };
                s.write_all(&MAGIC.to_le_bytes()).and_then(|_| s.write_all(id)).map_err(|e| io("sending the id", e))?;
                arrived[rank] = true;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if start.elapsed() > timeout {
                    let missing = arrived.iter().enumerate().filter(|(_, a)| !**a).map(|(r, _)| r).collect();
                    return Err(RendezvousError::Missing { missing, world, timeout });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(io("accepting", e)),
        }
    }
    Ok(())
}

/// Rank 0: listens on `addr` (`host:port`; all interfaces for the port).
pub fn listen(addr: &str) -> Result<TcpListener, RendezvousError> {
    let port = addr.rsplit(':').next().unwrap_or("0");
    let any = format!("0.0.0.0:{port}");
    TcpListener::bind(&any).map_err(|source| RendezvousError::Listen { addr: any, source })
}

/// A rank > 0: receives the id from rank 0 at `addr`, retrying until `timeout`.
pub fn join(addr: &str, rank: usize, timeout: Duration) -> Result<[u8; ID_BYTES], RendezvousError> {
    let start = Instant::now();
    let mut last = String::from("no attempt");
    while start.elapsed() <= timeout {
        let targets: Vec<SocketAddr> = match addr.to_socket_addrs() {
            Ok(a) => a.collect(),
            Err(e) => {
                last = format!("resolving: {e}");
                Vec::new()
            }
        };
        for t in targets {
            match TcpStream::connect_timeout(&t, Duration::from_secs(2)) {
                Ok(mut s) => {
                    let io = |what, source| RendezvousError::Io { rank, what, source };
                    s.set_read_timeout(Some(timeout)).map_err(|e| io("connecting", e))?;
                    s.write_all(&MAGIC.to_le_bytes()).and_then(|_| s.write_all(&(rank as u32).to_le_bytes())).map_err(|e| io("saying hello", e))?;
                    let magic = read_u32(&mut s).map_err(|e| io("reading the id", e))?;
                    if magic != MAGIC {
                        last = format!("{t} is not rank 0 of an srmae job");
                        continue;
                    }
                    let mut id = [0u8; ID_BYTES];
                    s.read_exact(&mut id).map_err(|e| io("reading the id", e))?;
                    return Ok(id);
                }
                Err(e) => last = format!("{t}: {e}"),
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(RendezvousError::Unreachable { rank, addr: addr.to_string(), timeout, last })
}

/// Rank 0 of a single-machine job: publishes `id` in `path`.
pub fn publish_file(path: &Path, id: &[u8; ID_BYTES]) -> Result<(), RendezvousError> {
    let err = |source| RendezvousError::IdFile { path: path.display().to_string(), source };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    f.write_all(id).and_then(|_| f.sync_all()).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// A rank > 0 of a single-machine job: waits for rank 0's id file.
pub fn read_file(path: &Path, rank: usize, timeout: Duration) -> Result<[u8; ID_BYTES], RendezvousError> {
    let start = Instant::now();
    loop {
        if let Ok(b) = std::fs::read(path) {
            if let Ok(id) = <[u8; ID_BYTES]>::try_from(b.as_slice()) {
                return Ok(id);
            }
        }
        if start.elapsed() > timeout {
            return Err(RendezvousError::NoIdFile { rank, path: path.display().to_string(), timeout });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> [u8; ID_BYTES] {
        std::array::from_fn(|i| (i * 7 + 3) as u8)
    }

    #[test]
    fn three_ranks_receive_the_same_id_over_loopback() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let joiners: Vec<_> = (1..3)
            .map(|rank| {
                let addr = addr.clone();
                std::thread::spawn(move || join(&addr, rank, Duration::from_secs(10)).unwrap())
            })
            .collect();
        serve(&listener, 3, &id(), Duration::from_secs(10)).unwrap();
        for j in joiners {
            assert_eq!(j.join().unwrap(), id());
        }
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// A rank > 0 in its own process (started by the test below).
    #[test]
    #[ignore = "a child process of three_processes_receive_the_same_id"]
    fn rendezvous_child_rank() {
        let (Ok(addr), Ok(rank)) = (std::env::var("SRMAE_TEST_RDZV_ADDR"), std::env::var("SRMAE_TEST_RDZV_RANK")) else { return };
        let id = join(&addr, rank.parse().unwrap(), Duration::from_secs(20)).unwrap();
        println!("ID={}", hex(&id));
    }

    #[test]
    fn three_processes_receive_the_same_id() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let exe = std::env::current_exe().unwrap();
        let children: Vec<_> = (1..3)
            .map(|rank| {
                std::process::Command::new(&exe)
                    .args(["--exact", "training::rendezvous::tests::rendezvous_child_rank", "--ignored", "--nocapture", "--test-threads", "1"])
                    .env("SRMAE_TEST_RDZV_ADDR", &addr)
                    .env("SRMAE_TEST_RDZV_RANK", rank.to_string())
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        serve(&listener, 3, &id(), Duration::from_secs(20)).unwrap();
        for c in children {
            let out = c.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success() && text.contains(&format!("ID={}", hex(&id()))), "{text}");
        }
    }

    #[test]
    fn a_missing_rank_times_out_with_its_number() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let one = std::thread::spawn(move || join(&addr, 1, Duration::from_secs(10)).unwrap());
        let err = serve(&listener, 3, &id(), Duration::from_millis(700)).unwrap_err().to_string();
        assert!(err.contains("ranks [2] of 3 did not arrive"), "{err}");
        assert_eq!(one.join().unwrap(), id());
    }

    #[test]
    fn a_rank_that_cannot_reach_rank_0_says_so() {
        // A port nobody listens on (bound, then released).
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let err = join(&format!("127.0.0.1:{port}"), 5, Duration::from_millis(500)).unwrap_err().to_string();
        assert!(err.starts_with("rank 5: cannot reach rank 0 at 127.0.0.1:"), "{err}");
    }

    #[test]
    fn the_id_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nccl-id");
        publish_file(&path, &id()).unwrap();
        assert_eq!(read_file(&path, 1, Duration::from_secs(1)).unwrap(), id());
        let err = read_file(&dir.path().join("absent"), 3, Duration::from_millis(200)).unwrap_err().to_string();
        assert!(err.starts_with("rank 3: rank 0 did not publish"), "{err}");
    }
}

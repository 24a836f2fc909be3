//! The hot path: XREADGROUP for many consumer groups in one round trip, on a plain TCP
//! connection of its own, with a RESP reader that skips entries it has already parsed.
//!
//! Every agent's group reads every entry, so a process with N agents receives each entry N
//! times. The client library parses each reply into a tree of owned values before anything
//! else can look at it; profiling W1 showed that parsing was half of the client's time. This
//! reader looks at the entry id first and, for an entry it has seen (in this reply or a recent
//! one), skips the fields by their lengths and shares the entry already parsed.
//!
//! TLS connections (`rediss://`) take the client library's path instead; plain TCP and Unix
//! sockets come here.

use std::path::PathBuf;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::connect::CONNECT_TIMEOUT;
use super::resp::{Cursor, EntryCache, Parsed, Stop, encode};
use crate::backend::{BackendError, GroupRead, Keys};
use crate::message::Delivery;

/// Where Redis listens.
#[derive(Clone)]
pub(crate) enum Address {
    Tcp { host: String, port: u16 },
    Unix(PathBuf),
}

/// Where and how to connect.
#[derive(Clone)]
pub(crate) struct Target {
    pub address: Address,
    pub db: i64,
    pub username: Option<String>,
    pub password: Option<String>,
}

pub(crate) struct GroupReader {
    target: Target,
    conn: Option<Conn>,
}

/// A byte stream to Redis: TCP or a Unix socket.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

struct Conn {
    stream: Box<dyn Io>,
    buf: Vec<u8>,
    /// Unparsed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
}

impl Conn {
    async fn open(target: &Target) -> std::io::Result<Self> {
        let timed_out = |_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connecting timed out");
        let stream: Box<dyn Io> = match &target.address {
            Address::Tcp { host, port } => {
                let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host.as_str(), *port)))
                    .await
                    .map_err(timed_out)??;
                tcp.set_nodelay(true)?;
                Box::new(tcp)
            }
            #[cfg(unix)]
            Address::Unix(path) => Box::new(
                tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::UnixStream::connect(path))
                    .await
                    .map_err(timed_out)??,
            ),
            #[cfg(not(unix))]
            Address::Unix(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    "Unix sockets need a Unix system",
                ));
            }
        };
        let mut conn = Conn {
            stream,
            buf: vec![0; 1 << 16],
            start: 0,
            end: 0,
        };
        let mut hello = Vec::new();
        let mut replies = 0;
        if let Some(password) = &target.password {
            match &target.username {
                Some(user) => encode(&mut hello, &[b"AUTH", user.as_bytes(), password.as_bytes()]),
                None => encode(&mut hello, &[b"AUTH", password.as_bytes()]),
            }
            replies += 1;
        }
        if target.db != 0 {
            encode(&mut hello, &[b"SELECT", target.db.to_string().as_bytes()]);
            replies += 1;
        }
        if replies > 0 {
            conn.stream.write_all(&hello).await?;
            for _ in 0..replies {
                let reply = conn.next(|c| c.header().map(|_| ())).await?;
                reply.map_err(|e| match e {
                    Stop::Server(m) => std::io::Error::new(std::io::ErrorKind::PermissionDenied, m),
                    Stop::Protocol(m) => std::io::Error::new(std::io::ErrorKind::InvalidData, m),
                    Stop::Incomplete => std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "incomplete"),
                })?;
            }
        }
        Ok(conn)
    }

    /// Parses the next whole reply with `parse`, reading more bytes as long as it is
    /// incomplete. The outer error is I/O; the inner one what the reply said.
    async fn next<T>(
        &mut self,
        mut parse: impl FnMut(&mut Cursor<'_>) -> Parsed<T>,
    ) -> std::io::Result<Result<T, Stop>> {
        loop {
            let mut cursor = Cursor {
                buf: &self.buf[..self.end],
                pos: self.start,
            };
            match parse(&mut cursor) {
                Err(Stop::Incomplete) => {}
                done => {
                    self.start = cursor.pos;
                    return Ok(done);
                }
            }
            // Make room: move what is unparsed to the front, grow when a reply is large.
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.buf.len() {
                let grown = self.buf.len() * 2;
                self.buf.resize(grown, 0);
            }
            let n = self.stream.read(&mut self.buf[self.end..]).await?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "Redis closed the connection",
                ));
            }
            self.end += n;
        }
    }
}

impl GroupReader {
    pub fn new(target: Target) -> Self {
        GroupReader { target, conn: None }
    }

    /// XREADGROUP for every read, pipelined; answers in the order of `reads`.
    pub async fn read(
        &mut self,
        keys: &Keys,
        reads: &[GroupRead],
        cache: &mut EntryCache,
        max_count: usize,
    ) -> Result<Vec<Vec<Delivery>>, BackendError> {
        let result = tokio::time::timeout(
            super::connect::RESPONSE_TIMEOUT,
            self.read_inner(keys, reads, cache, max_count),
        )
        .await
        .unwrap_or_else(|_| {
            Err(BackendError::unavailable(
                "Redis did not answer XREADGROUP in time",
                "check that Redis is running and not overloaded",
            ))
        });
        if result.is_err() {
            // Whatever was left unread on the connection is garbage now.
            self.conn = None;
        }
        result
    }

    async fn read_inner(
        &mut self,
        keys: &Keys,
        reads: &[GroupRead],
        cache: &mut EntryCache,
        max_count: usize,
    ) -> Result<Vec<Vec<Delivery>>, BackendError> {
        let lost = |e: std::io::Error| {
            BackendError::unavailable(
                format!("lost the connection to Redis during XREADGROUP: {e}"),
                "check that Redis is running; an interrupted run can be continued with --resume",
            )
        };
        if self.conn.is_none() {
            self.conn = Some(Conn::open(&self.target).await.map_err(lost)?);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Ok(Vec::new());
        };
        let mut request = Vec::with_capacity(reads.len() * 96);
        for r in reads {
            let count = r.count.clamp(1, max_count).to_string();
            let from: &[u8] = if r.pending { b"0" } else { b">" };
            let stream = keys.group_stream(&r.group);
            encode(
                &mut request,
                &[
                    b"XREADGROUP",
                    b"GROUP",
                    r.group.as_bytes(),
                    r.consumer.as_bytes(),
                    b"COUNT",
                    count.as_bytes(),
                    b"STREAMS",
                    stream.as_bytes(),
                    from,
                ],
            );
        }
        conn.stream.write_all(&request).await.map_err(lost)?;
        let mut answers = Vec::with_capacity(reads.len());
        let mut failure = None;
        for _ in reads {
            match conn.next(|c| c.read_reply(cache)).await.map_err(lost)? {
                Ok(deliveries) => answers.push(deliveries),
                // Read the other replies all the same, to keep the connection in step.
                Err(Stop::Server(message)) => {
                    failure.get_or_insert_with(|| {
                        if message.contains("NOGROUP") {
                            BackendError::conflict(
                                format!("reading the stream: the run's consumer groups are gone from Redis ({message})"),
                                crate::backend::KEYS_DELETED,
                            )
                        } else {
                            BackendError::command(format!("XREADGROUP failed on Redis: {message}"))
                        }
                    });
                    answers.push(Vec::new());
                }
                Err(Stop::Protocol(message)) => {
                    return Err(BackendError::command(format!(
                        "unexpected reply to XREADGROUP: {message}"
                    )));
                }
                // `Conn::next` only returns once a reply is complete.
                Err(Stop::Incomplete) => {
                    return Err(BackendError::command("internal error: an incomplete reply"));
                }
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(answers),
        }
    }
}

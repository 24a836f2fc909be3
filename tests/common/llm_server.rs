//! A chat-completions server for tests and benchmarks: it speaks the OpenAI API
//! (`POST /v1/chat/completions`, `GET /v1/models`) on a free port, its replies a function of
//! the request, with latency and failures that a test can inject and counts a test can read.
//!
//! Plain HTTP/1.1 on std's `TcpListener`, a thread per connection and one request per
//! connection (`Connection: close`): as simple as a server can be, so that whatever a test
//! sees is the client's doing.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

/// How the server answers.
#[derive(Clone, Debug)]
pub struct Behaviour {
    /// The key it wants (`Authorization: Bearer ...`); `None` takes any or none.
    pub key: Option<String>,
    /// The models it serves.
    pub models: Vec<String>,
    /// Every answer waits this long...
    pub latency: Duration,
    /// ...plus up to this much more, drawn from the request: answers arrive shuffled.
    pub jitter: Duration,
    /// Every `n`-th request fails with this status (429 carries `Retry-After`).
    pub fail_every: Option<(u64, u16)>,
    /// The `Retry-After` of a 429, in seconds.
    pub retry_after: &'static str,
    /// Answer every request with an HTML page, as a proxy's error page would.
    pub html: bool,
    /// Answer every request with JSON that has no `choices`.
    pub no_choices: bool,
    /// A prompt longer than this many characters is refused as too long for the model.
    pub context_chars: usize,
    /// Answer only this many completions; later ones wait at the gate and are never
    /// answered (they fail when the server is dropped), so a test knows exactly what was.
    pub gate_after: Option<u64>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            key: None,
            models: vec!["stub-model".to_string(), "other-model".to_string()],
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            fail_every: None,
            retry_after: "0",
            html: false,
            no_choices: false,
            context_chars: 200_000,
            gate_after: None,
        }
    }
}

/// What the server saw.
#[derive(Default)]
struct Seen {
    requests: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    /// Completions answered, by the request body's digest.
    answered: Mutex<HashMap<u64, u64>>,
    /// Completions let through the gate.
    admitted: AtomicU64,
    gate: Mutex<Gate>,
    gate_moved: Condvar,
    /// When each completion request arrived.
    arrivals: Mutex<Vec<std::time::Instant>>,
}

#[derive(Default, PartialEq)]
enum Gate {
    /// Requests past `gate_after` wait.
    #[default]
    Closed,
    /// The server is going: waiting requests fail with 503, unanswered.
    Dropping,
}

impl Seen {
    /// Whether a completion may be answered: waits at a closed gate.
    fn admit(&self, b: &Behaviour) -> bool {
        let Some(limit) = b.gate_after else {
            return true;
        };
        if self.admitted.fetch_add(1, Ordering::SeqCst) < limit {
            return true;
        }
        let mut gate = self.gate.lock().unwrap();
        while *gate == Gate::Closed {
            gate = self.gate_moved.wait(gate).unwrap();
        }
        false
    }
}

pub struct LlmServer {
    pub port: u16,
    seen: Arc<Seen>,
    stopping: Arc<std::sync::atomic::AtomicBool>,
    acceptor: Option<std::thread::JoinHandle<()>>,
}

impl LlmServer {
    pub fn start(behaviour: Behaviour) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the stub LLM server");
        let port = listener.local_addr().expect("an address").port();
        let seen = Arc::new(Seen::default());
        let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (seen2, stopping2) = (seen.clone(), stopping.clone());
        let acceptor = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (seen, behaviour) = (seen2.clone(), behaviour.clone());
                std::thread::spawn(move || serve(stream, &seen, &behaviour));
            }
        });
        LlmServer {
            port,
            seen,
            stopping,
            acceptor: Some(acceptor),
        }
    }

    /// `http://127.0.0.1:{port}/v1`, as a scenario's `base_url`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// Requests received, failed ones included.
    pub fn requests(&self) -> u64 {
        self.seen.requests.load(Ordering::SeqCst)
    }

    /// The most requests that were in flight at once.
    pub fn max_in_flight(&self) -> u64 {
        self.seen.max_in_flight.load(Ordering::SeqCst)
    }

    /// How many distinct requests were answered more than once.
    pub fn answered_twice(&self) -> usize {
        self.seen
            .answered
            .lock()
            .unwrap()
            .values()
            .filter(|&&n| n > 1)
            .count()
    }

    /// Completions answered (successfully).
    pub fn answered(&self) -> u64 {
        self.seen.answered.lock().unwrap().values().sum()
    }

    /// When each completion request arrived, in order.
    pub fn arrivals(&self) -> Vec<std::time::Instant> {
        let mut arrivals = self.seen.arrivals.lock().unwrap().clone();
        arrivals.sort();
        arrivals
    }

    /// The digests of the request bodies answered.
    pub fn answered_requests(&self) -> std::collections::HashSet<u64> {
        self.seen.answered.lock().unwrap().keys().copied().collect()
    }
}

impl Drop for LlmServer {
    fn drop(&mut self) {
        *self.seen.gate.lock().unwrap() = Gate::Dropping;
        self.seen.gate_moved.notify_all();
        self.stopping.store(true, Ordering::SeqCst);
        // Wake the acceptor up, so that it sees it is stopping.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// One request, as read off a connection.
struct Request {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the server answers.
struct Reply {
    status: u16,
    body: String,
    content_type: &'static str,
    retry_after: Option<&'static str>,
}

impl Reply {
    fn json(status: u16, body: Value) -> Self {
        Reply {
            status,
            body: body.to_string(),
            content_type: "application/json",
            retry_after: None,
        }
    }

    fn error(status: u16, message: &str, code: &str) -> Self {
        Reply::json(
            status,
            json!({"error": {"message": message, "type": "invalid_request_error", "code": code}}),
        )
    }
}

/// Reads a request: the head up to the blank line, then `Content-Length` bytes of body.
fn read_request(stream: &mut std::net::TcpStream) -> Option<Request> {
    use std::io::{BufRead, BufReader, Read};
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, url) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let mut request = Request {
        method,
        url,
        headers,
        body: Vec::new(),
    };
    let length: usize = request
        .header("Content-Length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    request.body = vec![0; length];
    reader.read_exact(&mut request.body).ok()?;
    Some(request)
}

fn serve(mut stream: std::net::TcpStream, seen: &Seen, b: &Behaviour) {
    use std::io::Write;
    let Some(request) = read_request(&mut stream) else {
        return;
    };
    let reply = answer(&request, seen, b);
    let reason = match reply.status {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Bad Request",
    };
    let mut head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reply.content_type,
        reply.body.len()
    );
    if let Some(after) = reply.retry_after {
        head.push_str(&format!("Retry-After: {after}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(format!("{head}{}", reply.body).as_bytes());
    let _ = stream.flush();
}

/// FNV-1a: a digest of the request body, to pick words and latencies from.
fn digest(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

const WORDS: [&str; 24] = [
    "I think",
    "we should",
    "consider",
    "the evidence",
    "on balance",
    "frankly",
    "the costs",
    "the benefits",
    "are overstated",
    "matter most",
    "for workers",
    "for families",
    "in practice",
    "in theory",
    "I disagree",
    "I agree",
    "with you",
    "because",
    "history shows",
    "data suggest",
    "it depends",
    "on trust",
    "on fairness",
    "ultimately",
];

/// A reply that is a function of the request: a few words picked by its digest, and whom it
/// answers, so a transcript shows the conversation's shape.
fn reply_text(request: &Value, h: u64) -> String {
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    let last = messages
        .last()
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .chars()
        .take(24)
        .collect::<String>();
    let words: Vec<&str> = (0..6)
        .map(|i| WORDS[((h >> (i * 5)) % WORDS.len() as u64) as usize])
        .collect();
    format!(
        "{} ({} chars asked; re: {last})",
        words.join(" "),
        messages
            .iter()
            .map(|m| m["content"].as_str().unwrap_or("").len())
            .sum::<usize>()
    )
}

fn answer(request: &Request, seen: &Seen, b: &Behaviour) -> Reply {
    if request.url.ends_with("/v1/chat/completions") {
        seen.arrivals.lock().unwrap().push(std::time::Instant::now());
    }
    let n = seen.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let now = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    seen.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let h = digest(&request.body);
    let wait = b.latency
        + if b.jitter.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_micros(h % b.jitter.as_micros().max(1) as u64)
        };
    std::thread::sleep(wait);
    seen.in_flight.fetch_sub(1, Ordering::SeqCst);
    let authorized = b
        .key
        .as_ref()
        .is_none_or(|key| request.header("Authorization") == Some(format!("Bearer {key}").as_str()));
    if !authorized {
        return Reply::error(401, "Incorrect API key provided", "invalid_api_key");
    }
    if b.html {
        return Reply {
            status: 200,
            body: "<html><body>Bad gateway</body></html>".into(),
            content_type: "text/html",
            retry_after: None,
        };
    }
    if request.method == "GET" && request.url.ends_with("/v1/models") {
        let data: Vec<Value> = b
            .models
            .iter()
            .map(|m| json!({"id": m, "object": "model"}))
            .collect();
        return Reply::json(200, json!({"object": "list", "data": data}));
    }
    if !request.url.ends_with("/v1/chat/completions") {
        return Reply::error(404, "no such endpoint", "not_found");
    }
    if !seen.admit(b) {
        return Reply::error(503, "the server is going away", "unavailable");
    }
    if let Some((every, status)) = b.fail_every
        && n % every == 0
    {
        let mut reply = Reply::error(status, "try again", "overloaded");
        reply.retry_after = (status == 429).then_some(b.retry_after);
        return reply;
    }
    let Ok(parsed) = serde_json::from_slice::<Value>(&request.body) else {
        return Reply::error(400, "the body is not JSON", "bad_request");
    };
    let model = parsed["model"].as_str().unwrap_or("").to_string();
    if !b.models.contains(&model) {
        return Reply::error(
            404,
            &format!("The model `{model}` does not exist"),
            "model_not_found",
        );
    }
    let prompt_chars: usize = parsed["messages"]
        .as_array()
        .map(|m| m.iter().map(|m| m["content"].as_str().unwrap_or("").len()).sum())
        .unwrap_or(0);
    if prompt_chars > b.context_chars {
        return Reply::error(
            400,
            "This model's maximum context length is 8192 tokens",
            "context_length_exceeded",
        );
    }
    if b.no_choices {
        return Reply::json(200, json!({"id": "x", "object": "chat.completion"}));
    }
    *seen.answered.lock().unwrap().entry(h).or_insert(0) += 1;
    let text = reply_text(&parsed, h);
    Reply::json(
        200,
        json!({
            "id": format!("chatcmpl-{h:x}"),
            "object": "chat.completion",
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_chars / 4 + 1, "completion_tokens": text.len() / 4 + 1, "total_tokens": prompt_chars / 4 + text.len() / 4 + 2},
        }),
    )
}

//! Redis URLs, parsed once: the connection, every message and the masked form all come from
//! that one parse, so agora never names one server and connects to another.
//!
//! `redis://[user[:password]@]host[:port][/db][?db=N]`, `rediss://...` for TLS (append
//! `#insecure` to accept a self-signed certificate), and `unix:///path/to/redis.sock` (or
//! `redis+unix://`) with `?db=N&user=U&pass=P`. The database is read as redis-py reads it: the
//! `db` query parameter first, then the path. Any other query parameter is refused by name,
//! never ignored. A password is never printed: `Display`, `Debug` and every error hide it.

use std::fmt;
use std::path::PathBuf;

use percent_encoding::{NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};

/// The URL used when a scenario names none.
pub const DEFAULT: &str = "redis://127.0.0.1:6379/0";

const DEFAULT_PORT: u16 = 6379;

/// How to reach a Redis: where, which database, as whom.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    place: Place,
    db: u32,
    username: Option<String>,
    password: Option<String>,
}

#[derive(Clone, PartialEq, Eq)]
enum Place {
    Tcp {
        host: String,
        port: u16,
        tls: Option<Tls>,
    },
    Unix(PathBuf),
}

/// TLS, and whether a certificate that cannot be verified is accepted (`#insecure`).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Tls {
    insecure: bool,
}

/// A URL that cannot be used, said without its password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlError {
    pub message: String,
    pub hint: String,
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

const FORMS: &str = "write it as redis://[user:password@]host:port/db, rediss:// for TLS, or \
unix:///path/to/redis.sock?db=N for a Unix socket";

const ENCODE_HINT: &str = "percent-encode the reserved characters of a user name or password: \
? as %3F, # as %23, / as %2F, @ as %40, : as %3A, % as %25 (Python: urllib.parse.quote(password, safe=''))";

impl RedisUrl {
    /// Reads a Redis URL.
    ///
    /// # Errors
    ///
    /// Not a Redis URL, a user name or password with reserved characters left unencoded, a
    /// port or database that is not a number, a query parameter agora does not read. The
    /// error never holds the password.
    pub fn parse(text: &str) -> Result<Self, UrlError> {
        let shown = redact(text);
        let bad = |what: String, hint: &str| UrlError {
            message: format!("{shown:?} {what}"),
            hint: hint.to_string(),
        };
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(bad("is not a Redis URL".into(), FORMS));
        };
        if let Some(at) = rest.rfind('@')
            && let Some(c) = rest[..at].chars().find(|c| matches!(c, '/' | '?' | '#'))
        {
            return Err(bad(
                format!("has a {c:?} in its user name or password, which must be percent-encoded"),
                ENCODE_HINT,
            ));
        }
        let host_part = rest[rest.rfind('@').map_or(0, |at| at + 1)..]
            .split(['/', '?'])
            .next()
            .unwrap_or_default();
        if host_part.contains(',') {
            return Err(bad(
                "names several servers; give one".into(),
                "a Redis URL names one server: for a Redis Cluster, any one of its nodes (agora finds the others) with backend.cluster = true",
            ));
        }
        let parsed = url::Url::parse(text).map_err(|e| {
            let hint = if rest.starts_with(':') || rest.matches(':').count() > 1 && !rest.contains('[') {
                "an IPv6 address goes in brackets: redis://[::1]:6379/0"
            } else {
                FORMS
            };
            bad(format!("is not a valid URL ({e})"), hint)
        })?;
        let place = match scheme {
            "redis" | "rediss" => tcp_place(&parsed, scheme == "rediss").map_err(|m| bad(m, FORMS))?,
            "unix" | "redis+unix" => unix_place(&parsed).map_err(|m| bad(m, FORMS))?,
            _ => {
                return Err(bad(
                    format!("has the scheme {scheme:?}: use redis://, rediss:// or unix://"),
                    FORMS,
                ));
            }
        };
        let mut url = RedisUrl {
            place,
            db: 0,
            username: decoded(parsed.username()),
            password: parsed.password().and_then(decoded),
        };
        url.read_path_and_query(&parsed).map_err(|m| bad(m, FORMS))?;
        Ok(url)
    }

    /// The database from the path (`/N`), then from `?db=N`, and the unix socket's user and
    /// password from the query; any other query parameter is refused.
    fn read_path_and_query(&mut self, parsed: &url::Url) -> Result<(), String> {
        let from_path = match (&self.place, parsed.path().trim_start_matches('/')) {
            (Place::Tcp { .. }, "") | (Place::Unix(_), _) => None,
            (Place::Tcp { .. }, db) => Some(database(db)?),
        };
        let mut from_query = None;
        for (key, value) in parsed.query_pairs() {
            match (&self.place, key.as_ref()) {
                (_, "db") => from_query = Some(database(&value)?),
                (Place::Unix(_), "user" | "username") => self.username = Some(value.into_owned()),
                (Place::Unix(_), "pass" | "password") => self.password = Some(value.into_owned()),
                (_, other) => {
                    return Err(format!(
                        "has the query parameter {other:?}, which agora does not read: it takes db= (and user=, pass= for unix:// sockets)"
                    ));
                }
            }
        }
        // As redis-py reads it: the query's db first, then the path's.
        self.db = from_query.or(from_path).unwrap_or(0);
        Ok(())
    }

    /// What the client library connects with: exactly this parse.
    pub fn connection_info(&self) -> redis::RedisResult<ConnectionInfo> {
        let addr = match &self.place {
            Place::Tcp {
                host,
                port,
                tls: None,
            } => ConnectionAddr::Tcp(host.clone(), *port),
            Place::Tcp {
                host,
                port,
                tls: Some(tls),
            } => ConnectionAddr::TcpTls {
                host: host.clone(),
                port: *port,
                insecure: tls.insecure,
                tls_params: None,
            },
            Place::Unix(path) => ConnectionAddr::Unix(path.clone()),
        };
        let mut settings = RedisConnectionInfo::default().set_db(i64::from(self.db));
        if let Some(user) = &self.username {
            settings = settings.set_username(user);
        }
        if let Some(password) = &self.password {
            settings = settings.set_password(password);
        }
        Ok(addr.into_connection_info()?.set_redis_settings(settings))
    }

    /// The URL with its password, percent-encoded, for a worker process this one starts
    /// (through its environment, never its command line). It parses back to `self`.
    pub fn expose(&self) -> String {
        self.write(true)
    }

    /// The password, for hiding it in text that may hold it (the client library's errors).
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// `host:port` or a Unix socket's path, for messages.
    pub fn address(&self) -> String {
        match &self.place {
            Place::Tcp { host, port, .. } if host.contains(':') => format!("[{host}]:{port}"),
            Place::Tcp { host, port, .. } => format!("{host}:{port}"),
            Place::Unix(path) => path.display().to_string(),
        }
    }

    /// The database number.
    pub fn db(&self) -> u32 {
        self.db
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.place, Place::Tcp { tls: Some(_), .. })
    }

    pub fn is_unix(&self) -> bool {
        matches!(self.place, Place::Unix(_))
    }

    /// The URL written out, with the password or `***` in its place.
    fn write(&self, with_password: bool) -> String {
        let encode = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
        let password = match (&self.password, with_password) {
            (Some(p), true) => Some(encode(p)),
            (Some(_), false) => Some("***".to_string()),
            (None, _) => None,
        };
        match &self.place {
            Place::Tcp { tls, .. } => {
                let scheme = if tls.is_some() { "rediss" } else { "redis" };
                let userinfo = match (&self.username, &password) {
                    (Some(u), Some(p)) => format!("{}:{p}@", encode(u)),
                    (None, Some(p)) => format!(":{p}@"),
                    (Some(u), None) => format!("{}@", encode(u)),
                    (None, None) => String::new(),
                };
                let insecure = if tls.is_some_and(|t| t.insecure) {
                    "#insecure"
                } else {
                    ""
                };
                format!("{scheme}://{userinfo}{}/{}{insecure}", self.address(), self.db)
            }
            Place::Unix(path) => {
                let mut query = format!("db={}", self.db);
                if let Some(u) = &self.username {
                    query.push_str(&format!("&user={}", encode(u)));
                }
                if let Some(p) = password {
                    query.push_str(&format!("&pass={p}"));
                }
                format!("unix://{}?{query}", path.display())
            }
        }
    }
}

fn tcp_place(parsed: &url::Url, tls: bool) -> Result<Place, String> {
    let host = match parsed.host() {
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        Some(host) => host.to_string(),
        None => return Err("names no host".into()),
    };
    if host.is_empty() {
        return Err("names no host".into());
    }
    let insecure = match parsed.fragment() {
        None => false,
        Some("insecure") if tls => true,
        Some(other) => {
            return Err(format!(
                "ends in #{other}: the only fragment agora reads is #insecure, on rediss:// URLs"
            ));
        }
    };
    Ok(Place::Tcp {
        host,
        port: parsed.port().unwrap_or(DEFAULT_PORT),
        tls: tls.then_some(Tls { insecure }),
    })
}

fn unix_place(parsed: &url::Url) -> Result<Place, String> {
    let path = percent_decode_str(parsed.path()).decode_utf8_lossy().into_owned();
    if !path.starts_with('/') || path.len() < 2 || parsed.host_str().is_some_and(|h| !h.is_empty()) {
        return Err(
            "names no socket: write it as unix:///path/to/redis.sock (an absolute path, then ?db=N&user=U&pass=P if needed)"
                .into(),
        );
    }
    if parsed.fragment().is_some() {
        return Err("ends in a #fragment, which unix:// URLs do not take".into());
    }
    Ok(Place::Unix(PathBuf::from(path)))
}

/// A database is a number: `redis://host:6379/2`, `?db=2`.
fn database(text: &str) -> Result<u32, String> {
    text.parse()
        .map_err(|_| format!("names database {text:?}: databases are numbered, as in redis://host:6379/0"))
}

/// A user name or password as the URL writes it, percent-decoded; `None` when empty.
fn decoded(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| percent_decode_str(text).decode_utf8_lossy().into_owned())
}

/// `text` with anything that may be a password hidden: all of what stands before the last
/// `@` (user and password) and `pass=` or `password=` values. For text that may not parse.
pub fn redact(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else {
        return text.to_string();
    };
    let rest = match rest.rfind('@') {
        Some(at) => format!("***@{}", &rest[at + 1..]),
        None => rest.to_string(),
    };
    let rest = match rest.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key @ ("pass" | "password"), _)) => format!("{key}=***"),
                    _ => pair.to_string(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => rest,
    };
    format!("{scheme}://{rest}")
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.write(false))
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> RedisUrl {
        RedisUrl::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn hides_passwords() {
        let url = parse("redis://alice:s3cret@db.example:6380/2");
        assert_eq!(url.to_string(), "redis://alice:***@db.example:6380/2");
        assert!(!format!("{url:?}").contains("s3cret"));
        assert_eq!(url.address(), "db.example:6380");
        assert_eq!(redact("redis://:pw@h:1"), "redis://***@h:1");
        assert_eq!(redact("rediss://pw@h"), "rediss://***@h");
        assert_eq!(redact("redis://h:1/0"), "redis://h:1/0");
    }

    #[test]
    fn rejects_what_is_not_a_redis_url() {
        for bad in [
            "127.0.0.1:6379",
            "http://h",
            "redis://",
            "redis://h:http/0",
            "redis://h:6379/abc",
            "unix:///tmp/r.sock?db=x",
            "redis://h:6379/0?timeout=3",
            "redis://h/0#insecure",
            "redis://::1:6379",
        ] {
            assert!(RedisUrl::parse(bad).is_err(), "{bad}");
        }
        assert!(RedisUrl::parse("redis://u:p@h:6379/2").is_ok());
        assert!(RedisUrl::parse("redis://h:6379/").is_ok());
        assert!(RedisUrl::parse("unix:///tmp/r.sock?db=3&pass=p").is_ok());
        assert_eq!(parse("redis://[::1]:6379").address(), "[::1]:6379");
        let tls = parse("rediss://h:6380#insecure");
        assert_eq!((tls.address(), tls.is_tls()), ("h:6380".to_string(), true));
        let err = RedisUrl::parse("http://u:topsecret@h").unwrap_err();
        assert!(!err.message.contains("topsecret"), "{err}");
    }

    #[test]
    fn the_database_is_read_as_redis_py_reads_it() {
        assert_eq!(parse("redis://h:1/0?db=3").db, 3);
        assert_eq!(parse("redis://h:1?db=3").db, 3);
        assert_eq!(parse("redis://h:1/4").db, 4);
        assert_eq!(parse("redis://h:1/4?db=4").db, 4);
        let info = parse("redis://h:1?db=3").connection_info().unwrap();
        assert_eq!(info.redis_settings().db(), 3);
    }

    #[test]
    fn unencoded_reserved_characters_in_a_password_are_refused_unprinted() {
        for text in [
            "redis://admin:Sec?Ret9@127.0.0.1:6379/0",
            "redis://admin:Sec#Ret9@127.0.0.1:6379/0",
            "redis://admin:Sec/Ret9@127.0.0.1:6379/0",
        ] {
            let e = RedisUrl::parse(text).unwrap_err();
            assert!(!e.message.contains("Ret9") && !e.hint.contains("Ret9"), "{e:?}");
            assert!(e.hint.contains("%3F"), "{e:?}");
        }
        let several = RedisUrl::parse("redis://127.0.0.1:7101,127.0.0.1:7102").unwrap_err();
        assert!(several.message.contains("names several servers"), "{several:?}");
        assert!(several.hint.contains("any one of its nodes"), "{several:?}");
        // An @ in a password is read as the URL standard says: the last @ ends the user part.
        let url = parse("redis://admin:p@ss@127.0.0.1:6379/0");
        assert_eq!(
            (url.password(), url.address().as_str()),
            (Some("p@ss"), "127.0.0.1:6379")
        );
        let encoded = parse("redis://admin:Sec%3FRet9@127.0.0.1:6379/0");
        assert_eq!(encoded.password(), Some("Sec?Ret9"));
        assert_eq!(parse(&encoded.expose()), encoded);
    }

    #[test]
    fn unix_sockets() {
        let url = parse("unix:///run/redis/redis.sock?db=2&pass=hush");
        assert!(url.is_unix());
        assert_eq!(url.address(), "/run/redis/redis.sock");
        assert_eq!(url.to_string(), "unix:///run/redis/redis.sock?db=2&pass=***");
        assert!(parse("redis+unix:///tmp/r.sock").is_unix());
        assert!(!parse("redis://h").is_unix());
        let err = RedisUrl::parse("unix://relative.sock?pass=hush").unwrap_err();
        assert!(
            err.message.contains("unix:///path/to/redis.sock") && !err.message.contains("hush"),
            "{err}"
        );
        assert!(RedisUrl::parse("unix://").is_err());
        assert_eq!(parse(&url.expose()), url);
    }
}

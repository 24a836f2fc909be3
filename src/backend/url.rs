//! Redis URLs, kept whole for connecting and shown only with the password hidden.

use std::fmt;

/// A `redis://` or `rediss://` URL. `Display` and `Debug` never show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

pub const DEFAULT: &str = "redis://127.0.0.1:6379/0";

impl RedisUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(format!(
                "{:?} is not a Redis URL: write it as redis://host:port/db (or rediss:// for TLS, \
                 unix:///path/to/redis.sock for a Unix socket)",
                redact(text)
            ));
        };
        match scheme {
            "redis" | "rediss" => {}
            "unix" | "redis+unix" => {
                if !socket_path(rest).starts_with('/') {
                    return Err(format!(
                        "{:?} names no socket: write it as unix:///path/to/redis.sock (an absolute \
                         path, then ?db=N&user=U&pass=P if needed)",
                        redact(text)
                    ));
                }
                let query = rest.split_once('?').map_or("", |(_, q)| q);
                let db = query.split(['&', '#']).find_map(|pair| pair.strip_prefix("db="));
                if let Some(db) = db {
                    check_database(text, db)?;
                }
                return Ok(RedisUrl(text.to_string()));
            }
            _ => {
                return Err(format!(
                    "unsupported scheme {scheme:?} in {:?}: use redis://, rediss:// or unix://",
                    redact(text)
                ));
            }
        }
        let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        let host = host.split(['/', '?', '#']).next().unwrap_or_default();
        if host.is_empty() {
            return Err(format!("{:?} names no host", redact(text)));
        }
        // A port after the host (not inside an IPv6 address's brackets) must be a number.
        let after_brackets = host.rsplit_once(']').map_or(host, |(_, rest)| rest);
        if let Some((_, port)) = after_brackets.rsplit_once(':')
            && port.parse::<u16>().is_err()
        {
            return Err(format!("{:?} has an invalid port {port:?}", redact(text)));
        }
        let after_host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        if let Some((_, path)) = after_host.split_once('/') {
            let db = path.split(['?', '#']).next().unwrap_or_default();
            if !db.is_empty() {
                check_database(text, db)?;
            }
        }
        Ok(RedisUrl(text.to_string()))
    }

    /// The URL with its password, for the client library only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `host:port` (or the host alone, or a Unix socket's path), for error messages.
    pub fn address(&self) -> String {
        let rest = self.0.split_once("://").map_or(self.0.as_str(), |(_, r)| r);
        if self.is_unix() {
            return socket_path(rest).to_string();
        }
        let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        host.split(['/', '?', '#']).next().unwrap_or_default().to_string()
    }

    pub fn is_tls(&self) -> bool {
        self.0.starts_with("rediss://")
    }

    pub fn is_unix(&self) -> bool {
        self.0.starts_with("unix://") || self.0.starts_with("redis+unix://")
    }
}

/// A database is a number: `redis://host:6379/2`, `unix:///path?db=2`.
fn check_database(text: &str, db: &str) -> Result<(), String> {
    match db.parse::<u32>() {
        Ok(_) => Ok(()),
        Err(_) => Err(format!(
            "{:?} names database {db:?}: databases are numbered, as in redis://host:6379/0",
            redact(text)
        )),
    }
}

/// The socket's path in what follows `unix://`: everything before the query.
fn socket_path(rest: &str) -> &str {
    rest.split(['?', '#']).next().unwrap_or_default()
}

/// `text` with any password in it replaced by `***`.
pub fn redact(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else {
        return text.to_string();
    };
    if let Some((path, query)) = rest.split_once('?') {
        // unix:///path?pass=secret: the password is a query parameter.
        let query: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key @ ("pass" | "password"), _)) => format!("{key}=***"),
                _ => pair.to_string(),
            })
            .collect();
        return redact(&format!("{scheme}://{path}")) + "?" + &query.join("&");
    }
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return text.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
        None if userinfo.is_empty() => text.to_string(),
        // redis://secret@host: a lone userinfo is taken as the password.
        None => format!("{scheme}://***@{host}"),
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.0))
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({})", redact(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_passwords() {
        let url = RedisUrl::parse("redis://alice:s3cret@db.example:6380/2").unwrap();
        assert_eq!(url.to_string(), "redis://alice:***@db.example:6380/2");
        assert!(!format!("{url:?}").contains("s3cret"));
        assert_eq!(url.address(), "db.example:6380");
        assert_eq!(redact("redis://:pw@h:1"), "redis://:***@h:1");
        assert_eq!(redact("rediss://pw@h"), "rediss://***@h");
        assert_eq!(redact("redis://h:1/0"), "redis://h:1/0");
    }

    #[test]
    fn rejects_what_is_not_a_redis_url() {
        assert!(RedisUrl::parse("127.0.0.1:6379").is_err());
        assert!(RedisUrl::parse("http://h").is_err());
        assert!(RedisUrl::parse("redis://").is_err());
        assert!(RedisUrl::parse("redis://h:http/0").is_err());
        assert!(RedisUrl::parse("redis://h:6379/abc").is_err());
        assert!(RedisUrl::parse("redis://u:p@h:6379/2").is_ok());
        assert!(RedisUrl::parse("redis://h:6379/").is_ok());
        assert!(RedisUrl::parse("unix:///tmp/r.sock?db=x").is_err());
        assert!(RedisUrl::parse("unix:///tmp/r.sock?db=3&pass=p").is_ok());
        assert!(RedisUrl::parse("redis://[::1]:6379").is_ok());
        let tls = RedisUrl::parse("rediss://h:6380#insecure").unwrap();
        assert_eq!(tls.address(), "h:6380");
        let err = RedisUrl::parse("http://u:topsecret@h").unwrap_err();
        assert!(!err.contains("topsecret"), "{err}");
        assert!(RedisUrl::parse("rediss://u:p@h:6379/0").unwrap().is_tls());
    }

    #[test]
    fn unix_sockets() {
        let url = RedisUrl::parse("unix:///run/redis/redis.sock?db=2&pass=hush").unwrap();
        assert!(url.is_unix());
        assert_eq!(url.address(), "/run/redis/redis.sock");
        assert_eq!(url.to_string(), "unix:///run/redis/redis.sock?db=2&pass=***");
        assert!(RedisUrl::parse("redis+unix:///tmp/r.sock").unwrap().is_unix());
        assert!(!RedisUrl::parse("redis://h").unwrap().is_unix());
        let err = RedisUrl::parse("unix://relative.sock?pass=hush").unwrap_err();
        assert!(
            err.contains("unix:///path/to/redis.sock") && !err.contains("hush"),
            "{err}"
        );
        assert!(RedisUrl::parse("unix://").is_err());
    }
}

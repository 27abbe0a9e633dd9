//! The client side of the OCI distribution API: manifests and blobs over HTTP(S), trying each host
//! of a registry in order, with the auth flows registries use (anonymous, basic, bearer tokens from
//! a `WWW-Authenticate` challenge, identity and registry tokens). It fetches and verifies bytes; it
//! never decides what is stored.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::header::{ACCEPT, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{Client, Response, StatusCode, Url};

use crate::content::Ingest;
use crate::hosts::RegistryHost;
use crate::manifest::{ACCEPT as MANIFEST_ACCEPT, MAX_MANIFEST_BYTES};
use crate::{Digest, Error};

/// Credentials for one pull, as the CRI's `AuthConfig` carries them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// base64 of `username:password`, as in a docker config.json.
    pub auth: String,
    /// A refresh token, exchanged at the token endpoint (OAuth2 `refresh_token` grant).
    pub identity_token: String,
    /// A bearer token sent to the registry as it is.
    pub registry_token: String,
}

impl Credentials {
    fn basic(&self) -> Result<Option<(String, String)>, Error> {
        if !self.username.is_empty() {
            return Ok(Some((self.username.clone(), self.password.clone())));
        }
        if self.auth.is_empty() {
            return Ok(None);
        }
        let bad = |reason: &str| Error::Unauthorized {
            host: "-".into(),
            message: format!("the `auth` credential {reason}"),
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(self.auth.trim())
            .map_err(|_| bad("is not base64"))?;
        let text = String::from_utf8(raw).map_err(|_| bad("is not UTF-8"))?;
        let (u, p) = text
            .split_once(':')
            .ok_or_else(|| bad("is not user:password"))?;
        Ok(Some((u.to_owned(), p.to_owned())))
    }

    /// Who these credentials are, to key cached tokens (never logged).
    fn identity(&self) -> String {
        match self.basic() {
            Ok(Some((u, _))) => format!("user:{u}"),
            _ if !self.identity_token.is_empty() => "identity".into(),
            _ => "anonymous".into(),
        }
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, PartialEq, Eq)]
struct Challenge {
    scheme: String,
    params: HashMap<String, String>,
}

/// `Bearer realm="https://a/token",service="reg",scope="repository:x:pull"`; quoted values may
/// hold commas and backslash escapes.
fn parse_challenge(h: &str) -> Option<Challenge> {
    let h = h.trim();
    let (scheme, rest) = h.split_once(char::is_whitespace).unwrap_or((h, ""));
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if chars.next().is_none() {
            break;
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => val.extend(chars.next()),
                    '"' => break,
                    c => val.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                val.push(c);
                chars.next();
            }
        }
        params.insert(key.trim().to_ascii_lowercase(), val.trim().to_owned());
    }
    Some(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

#[derive(Clone)]
enum CachedAuth {
    Basic,
    Bearer { token: String, expires: Instant },
}

/// Shared by all pulls: HTTP clients per TLS setting and tokens until they expire.
pub(crate) struct RegistryClient {
    clients: Mutex<HashMap<(bool, Vec<PathBuf>), Client>>,
    auth: Mutex<HashMap<String, CachedAuth>>,
    /// No progress for this long fails the request.
    stall: Duration,
    user_agent: String,
}

/// Installs ring as rustls' provider once per process: reqwest is built without one, so that the
/// build does not need aws-lc. An error means some other part installed one first, which is fine.
fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

impl RegistryClient {
    pub(crate) fn new(stall: Duration) -> Self {
        install_crypto_provider();
        Self {
            clients: Mutex::new(HashMap::new()),
            auth: Mutex::new(HashMap::new()),
            stall,
            user_agent: format!("carapace/{}", env!("CARGO_PKG_VERSION")),
        }
    }

    fn client(&self, host: &RegistryHost) -> Result<Client, Error> {
        let key = (host.skip_verify, host.ca.clone());
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let mut b = Client::builder()
            .user_agent(self.user_agent.clone())
            .connect_timeout(self.stall.min(Duration::from_secs(30)))
            .danger_accept_invalid_certs(host.skip_verify);
        for ca in &host.ca {
            let pem = std::fs::read(ca).map_err(|e| Error::Config {
                path: ca.clone(),
                reason: format!("reading CA file: {e}"),
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| Error::Config {
                path: ca.clone(),
                reason: format!("not a PEM certificate bundle: {e}"),
            })?;
            b = b.tls_certs_merge(certs);
        }
        let c = b.build().map_err(|e| Error::Registry {
            host: host.authority(),
            message: format!("building HTTP client: {e}"),
        })?;
        clients.insert(key, c.clone());
        Ok(c)
    }
}

/// `GET /v2/` on one host, the distribution API's version check, with the host's TLS settings
/// and headers, within `timeout`: the HTTP status it answered (200, or 401 for a registry that
/// wants credentials, both mean it speaks the API). For `carapace check`, not for pulls.
pub async fn ping(host: &RegistryHost, timeout: Duration) -> Result<u16, Error> {
    let client = RegistryClient::new(timeout).client(host)?;
    let url = format!("{}/", host.api.as_str().trim_end_matches('/'));
    let mut req = client.get(&url).timeout(timeout);
    for (k, v) in &host.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let resp = req.send().await.map_err(|e| Error::Registry {
        host: host.authority(),
        message: describe(&e),
    })?;
    Ok(resp.status().as_u16())
}

/// One pull's view of one repository: the hosts to try and the credentials to use.
pub(crate) struct Session {
    pub(crate) client: std::sync::Arc<RegistryClient>,
    pub(crate) hosts: Vec<RegistryHost>,
    pub(crate) repository: String,
    pub(crate) creds: Credentials,
}

/// How much an error says about the image, to pick which to report when every host failed: a
/// denial beats "not found", which beats a host that was down.
fn rank(e: &Error) -> u8 {
    match e {
        Error::Unauthorized { .. } => 3,
        Error::NotFoundInRegistry { .. } => 2,
        Error::Verification { .. } | Error::Refused { .. } | Error::Unsupported(_) => 1,
        _ => 0,
    }
}

fn keep_worst(best: &mut Option<Error>, e: Error) {
    if best.as_ref().is_none_or(|b| rank(&e) >= rank(b)) {
        *best = Some(e);
    }
}

impl Session {
    fn scope(&self) -> String {
        format!("repository:{}:pull", self.repository)
    }

    fn auth_key(&self, host: &RegistryHost) -> String {
        format!(
            "{}|{}|{}",
            host.authority(),
            self.scope(),
            self.creds.identity()
        )
    }

    fn url(&self, host: &RegistryHost, kind: &str, reference: &str) -> Result<Url, Error> {
        let s = format!(
            "{}/{}/{kind}/{reference}",
            host.api.as_str().trim_end_matches('/'),
            self.repository
        );
        Url::parse(&s).map_err(|e| Error::Internal(format!("building URL {s:?}: {e}")))
    }

    /// GET with the auth flow: send with what we have cached; on 401, answer the challenge once
    /// and retry. A 401/403 after that is the registry's final word.
    async fn get(
        &self,
        host: &RegistryHost,
        url: Url,
        accept: Option<&str>,
    ) -> Result<Response, Error> {
        let client = self.client.client(host)?;
        let key = self.auth_key(host);
        let mut answered = false;
        loop {
            let mut req = client.get(url.clone());
            for (k, v) in &host.headers {
                req = req.header(k.as_str(), v.as_str());
            }
            if let Some(a) = accept {
                req = req.header(ACCEPT, a);
            }
            req = self.authorize(req, &key)?;
            let resp = self.timed(host, url.path(), req.send()).await?;
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && !answered {
                let challenge = resp
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_challenge);
                let Some(ch) = challenge else {
                    return Err(self.denied(host, resp).await);
                };
                self.answer(host, &key, &ch).await?;
                answered = true;
                continue;
            }
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                return Err(self.denied(host, resp).await);
            }
            if status == StatusCode::NOT_FOUND {
                return Err(Error::NotFoundInRegistry {
                    host: host.authority(),
                    what: format!(
                        "{}/{}",
                        self.repository,
                        url.path().rsplit('/').next().unwrap_or("")
                    ),
                });
            }
            if !status.is_success() {
                let msg = error_message(resp, self.client.stall).await;
                return Err(Error::Registry {
                    host: host.authority(),
                    message: format!("GET {}: {status}: {msg}", url.path()),
                });
            }
            return Ok(resp);
        }
    }

    fn authorize(
        &self,
        req: reqwest::RequestBuilder,
        key: &str,
    ) -> Result<reqwest::RequestBuilder, Error> {
        if !self.creds.registry_token.is_empty() {
            return Ok(req.bearer_auth(&self.creds.registry_token));
        }
        let cached = {
            let auth = self.client.auth.lock().unwrap_or_else(|p| p.into_inner());
            auth.get(key).cloned()
        };
        Ok(match cached {
            Some(CachedAuth::Bearer { token, expires }) if expires > Instant::now() => {
                req.bearer_auth(token)
            }
            Some(CachedAuth::Basic) => match self.creds.basic()? {
                Some((u, p)) => req.basic_auth(u, Some(p)),
                None => req,
            },
            _ => req,
        })
    }

    async fn answer(&self, host: &RegistryHost, key: &str, ch: &Challenge) -> Result<(), Error> {
        let cached = match ch.scheme.as_str() {
            "basic" => {
                if self.creds.basic()?.is_none() {
                    return Err(Error::Unauthorized {
                        host: host.authority(),
                        message: "the registry wants a username and password and none were given"
                            .into(),
                    });
                }
                CachedAuth::Basic
            }
            "bearer" => self.fetch_token(host, ch).await?,
            other => {
                return Err(Error::Unauthorized {
                    host: host.authority(),
                    message: format!("unsupported auth scheme {other:?}"),
                });
            }
        };
        let mut auth = self.client.auth.lock().unwrap_or_else(|p| p.into_inner());
        auth.insert(key.to_owned(), cached);
        Ok(())
    }

    async fn fetch_token(&self, host: &RegistryHost, ch: &Challenge) -> Result<CachedAuth, Error> {
        let realm = ch.params.get("realm").ok_or_else(|| Error::Unauthorized {
            host: host.authority(),
            message: "bearer challenge without a realm".into(),
        })?;
        let mut url = Url::parse(realm)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| Error::Unauthorized {
                host: host.authority(),
                message: format!("bearer realm {realm:?} is not an http(s) URL"),
            })?;
        let service = ch.params.get("service").cloned().unwrap_or_default();
        // The registry's scope names the resource it wants; ours is the fallback.
        let scope = ch
            .params
            .get("scope")
            .cloned()
            .unwrap_or_else(|| self.scope());
        let client = self.client.client(host)?;
        let req = if !self.creds.identity_token.is_empty() {
            let mut form =
                Url::parse("http://form.invalid/").map_err(|e| Error::Internal(e.to_string()))?;
            form.query_pairs_mut()
                .append_pair("grant_type", "refresh_token")
                .append_pair("refresh_token", &self.creds.identity_token)
                .append_pair("service", &service)
                .append_pair("scope", &scope)
                .append_pair("client_id", "carapace");
            client
                .post(url.clone())
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(form.query().unwrap_or("").to_owned())
        } else {
            {
                let mut q = url.query_pairs_mut();
                if !service.is_empty() {
                    q.append_pair("service", &service);
                }
                q.append_pair("scope", &scope);
            }
            let req = client.get(url.clone());
            match self.creds.basic()? {
                Some((u, p)) => req.basic_auth(u, Some(p)),
                None => req,
            }
        };
        let resp = self.timed(host, url.path(), req.send()).await?;
        if !resp.status().is_success() {
            let status = resp.status();
            let msg = error_message(resp, self.client.stall).await;
            let message = format!(
                "token endpoint {}: {status}: {msg}",
                url.host_str().unwrap_or("")
            );
            return Err(
                if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                    Error::Unauthorized {
                        host: host.authority(),
                        message,
                    }
                } else {
                    Error::Registry {
                        host: host.authority(),
                        message,
                    }
                },
            );
        }
        let body = read_limited(resp, 1 << 20, self.client.stall, host, "token").await?;
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            #[serde(default)]
            token: String,
            #[serde(default)]
            access_token: String,
            #[serde(default)]
            expires_in: Option<u64>,
        }
        let t: TokenResponse = serde_json::from_slice(&body).map_err(|e| Error::Registry {
            host: host.authority(),
            message: format!("token endpoint answered something that is not a token: {e}"),
        })?;
        let token = if t.token.is_empty() {
            t.access_token
        } else {
            t.token
        };
        if token.is_empty() {
            return Err(Error::Unauthorized {
                host: host.authority(),
                message: "token endpoint returned an empty token".into(),
            });
        }
        // The spec's default lifetime is 60 s; renew a little early so a token never expires
        // between our check and the registry's.
        let life = Duration::from_secs(t.expires_in.unwrap_or(60).max(60));
        Ok(CachedAuth::Bearer {
            token,
            expires: Instant::now() + life.saturating_sub(Duration::from_secs(10)),
        })
    }

    async fn denied(&self, host: &RegistryHost, resp: Response) -> Error {
        let status = resp.status();
        let msg = error_message(resp, self.client.stall).await;
        Error::Unauthorized {
            host: host.authority(),
            message: format!("{status}: {msg}"),
        }
    }

    async fn timed<F, T>(&self, host: &RegistryHost, what: &str, f: F) -> Result<T, Error>
    where
        F: Future<Output = Result<T, reqwest::Error>>,
    {
        match tokio::time::timeout(self.client.stall, f).await {
            Err(_) => Err(Error::Stalled {
                host: host.authority(),
                what: what.to_owned(),
                seconds: self.client.stall.as_secs(),
            }),
            Ok(Err(e)) => Err(Error::Registry {
                host: host.authority(),
                message: describe(&e),
            }),
            Ok(Ok(r)) => Ok(r),
        }
    }

    /// Fetches a manifest by tag or digest from the first host that has it. `by_digest` allows
    /// pull-only mirrors; resolving a tag needs the `resolve` capability.
    pub(crate) async fn manifest(
        &self,
        reference: &str,
        by_digest: bool,
    ) -> Result<(Vec<u8>, Option<String>, String), Error> {
        let mut worst = None;
        for host in &self.hosts {
            if !(host.capabilities.resolve || by_digest && host.capabilities.pull) {
                continue;
            }
            let res = async {
                let url = self.url(host, "manifests", reference)?;
                let resp = self.get(host, url, Some(MANIFEST_ACCEPT)).await?;
                let ct = resp
                    .headers()
                    .get(CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let header_digest = resp
                    .headers()
                    .get("docker-content-digest")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<Digest>().ok());
                let body =
                    read_limited(resp, MAX_MANIFEST_BYTES, self.client.stall, host, reference)
                        .await?;
                if let Some(d) = header_digest {
                    let got = Digest::of(&body);
                    if got != d {
                        return Err(Error::Verification {
                            digest: d,
                            reason: format!("manifest from {} hashes to {got}", host.authority()),
                        });
                    }
                }
                Ok((body, ct))
            }
            .await;
            match res {
                Ok((body, ct)) => return Ok((body, ct, host.authority())),
                Err(e) => {
                    tracing::debug!(host = %host.authority(), error = %e, "manifest not served by this host");
                    keep_worst(&mut worst, e);
                }
            }
        }
        Err(worst.unwrap_or_else(|| {
            Error::Unsupported("no host in hosts.toml may resolve or pull this registry".into())
        }))
    }

    /// Streams blob `digest` into `ingest`, adding each chunk's size to `progress`; tries the next
    /// host when one fails.
    pub(crate) async fn blob(
        &self,
        digest: &Digest,
        ingest: &mut Ingest,
        progress: &AtomicU64,
    ) -> Result<(), Error> {
        let mut worst = None;
        for host in self.hosts.iter().filter(|h| h.capabilities.pull) {
            if ingest.written() > 0 {
                ingest.reset().await?;
            }
            let res = async {
                let url = self.url(host, "blobs", digest.as_str())?;
                let mut resp = self.get(host, url, None).await?;
                loop {
                    let chunk = self.timed(host, digest.as_str(), resp.chunk()).await?;
                    let Some(chunk) = chunk else { break };
                    ingest.write(&chunk).await?;
                    progress.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
                Ok(())
            }
            .await;
            match res {
                Ok(()) => return Ok(()),
                // Writing the blob here failed (a full disk): no host is to blame, and the next
                // would only be downloaded into the same failure.
                Err(e @ Error::Io { .. }) => return Err(e),
                Err(e) => {
                    tracing::debug!(host = %host.authority(), %digest, error = %e, "blob not served by this host");
                    keep_worst(&mut worst, e);
                }
            }
        }
        Err(worst.unwrap_or_else(|| {
            Error::Unsupported("no host in hosts.toml may pull from this registry".into())
        }))
    }
}

/// A reqwest error with its causes, which say what actually failed (refused, TLS, DNS).
fn describe(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

async fn read_limited(
    mut resp: Response,
    max: u64,
    stall: Duration,
    host: &RegistryHost,
    what: &str,
) -> Result<Vec<u8>, Error> {
    if resp.content_length().is_some_and(|n| n > max) {
        return Err(Error::refused(
            what.to_owned(),
            format!("{} answered more than {max} bytes", host.authority()),
        ));
    }
    let mut out = Vec::new();
    loop {
        let chunk = match tokio::time::timeout(stall, resp.chunk()).await {
            Err(_) => {
                return Err(Error::Stalled {
                    host: host.authority(),
                    what: what.to_owned(),
                    seconds: stall.as_secs(),
                });
            }
            Ok(Err(e)) => {
                return Err(Error::Registry {
                    host: host.authority(),
                    message: describe(&e),
                });
            }
            Ok(Ok(None)) => return Ok(out),
            Ok(Ok(Some(c))) => c,
        };
        if out.len() as u64 + chunk.len() as u64 > max {
            return Err(Error::refused(
                what.to_owned(),
                format!("{} answered more than {max} bytes", host.authority()),
            ));
        }
        out.extend_from_slice(&chunk);
    }
}

/// The registry's own words for an error: the `errors[].message` of the distribution spec's error
/// body, else the start of the body.
async fn error_message(mut resp: Response, stall: Duration) -> String {
    let mut body = Vec::new();
    while body.len() < 16 * 1024 {
        match tokio::time::timeout(stall.min(Duration::from_secs(5)), resp.chunk()).await {
            Ok(Ok(Some(c))) => body.extend_from_slice(&c),
            _ => break,
        }
    }
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorEntry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(e) = serde_json::from_slice::<Errors>(&body) {
        let msgs: Vec<String> = e
            .errors
            .iter()
            .map(|x| match (x.code.is_empty(), x.message.is_empty()) {
                (false, false) => format!("{}: {}", x.code, x.message),
                (true, false) => x.message.clone(),
                _ => x.code.clone(),
            })
            .collect();
        if !msgs.is_empty() {
            return msgs.join("; ");
        }
    }
    let text = String::from_utf8_lossy(&body);
    let t: String = text.trim().chars().take(200).collect();
    if t.is_empty() { "no details".into() } else { t }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.docker.io/token");
        assert_eq!(c.params["service"], "registry.docker.io");
        assert_eq!(c.params["scope"], "repository:library/busybox:pull,push");
        let c = parse_challenge(r#"Basic realm="Registry \"x\"""#).unwrap();
        assert_eq!(c.scheme, "basic");
        assert_eq!(c.params["realm"], "Registry \"x\"");
        let c = parse_challenge("Bearer realm=http://a/t, service=s").unwrap();
        assert_eq!(c.params["realm"], "http://a/t");
        assert_eq!(c.params["service"], "s");
    }

    #[test]
    fn basic_credentials_from_auth() {
        let c = Credentials {
            auth: base64::engine::general_purpose::STANDARD.encode("u:p:q"),
            ..Default::default()
        };
        assert_eq!(c.basic().unwrap(), Some(("u".into(), "p:q".into())));
        let c = Credentials {
            auth: "!!".into(),
            ..Default::default()
        };
        assert!(c.basic().is_err());
        assert_eq!(Credentials::default().basic().unwrap(), None);
    }
}

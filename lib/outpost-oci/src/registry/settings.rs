//! How registries are reached: the `registry:` settings, logins and the secrets they name.

use super::*;
use crate::transfer::USER_AGENT;

/// Credentials for one registry, as configured: a username and the file holding the
/// password. The password itself is only read when a request needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Login {
    /// The username.
    pub username: Option<String>,
    /// The file holding the password (one trailing newline is stripped).
    pub password_file: Option<PathBuf>,
}

/// How registries and HTTP servers are reached: the `registry:` section of the
/// configuration, plus retry and timeout settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrySettings {
    /// `host[:port]` values spoken to over plain HTTP. Nothing else is.
    pub insecure_hosts: Vec<String>,
    /// `host[:port]` that replaces the host of every pulled reference.
    pub mirror: Option<String>,
    /// Credentials for hosts without their own entry in `auths`.
    pub default_login: Login,
    /// Per-host credentials (`host[:port]`), overriding the defaults.
    pub auths: BTreeMap<String, Login>,
    /// How transient failures are retried.
    pub retry: RetryPolicy,
    /// Longest wait for a connection.
    pub connect_timeout: Duration,
    /// `registry.stall_timeout`: how long a transfer may wait without making progress. Every
    /// read of a request (documents included) times out after this; a blob body that
    /// delivers less than [`STALL_MIN_BYTES`](crate::transfer::STALL_MIN_BYTES) in this much
    /// waiting is a stall. A stall is a transient failure: it is resumed, and fails the
    /// download (`download_failed`) once the retries are spent.
    pub stall_timeout: Duration,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        Self {
            insecure_hosts: Vec::new(),
            mirror: None,
            default_login: Login::default(),
            auths: BTreeMap::new(),
            retry: RetryPolicy::default(),
            connect_timeout: Duration::from_secs(15),
            stall_timeout: outpost_types::config::DEFAULT_STALL_TIMEOUT,
        }
    }
}

impl RegistrySettings {
    /// The settings of the configuration file's `registry:` section (`stall_timeout`
    /// included), with the default retry policy and connect timeout.
    pub fn from_config(c: &RegistryConfig) -> Self {
        Self {
            insecure_hosts: c.insecure_hosts.clone(),
            mirror: c.mirror.clone().filter(|m| !m.is_empty()),
            default_login: Login {
                username: c.username.clone(),
                password_file: c.password_file.clone(),
            },
            auths: c
                .auths
                .iter()
                .map(|(host, a)| {
                    (
                        host.clone(),
                        Login {
                            username: a.username.clone(),
                            password_file: a.password_file.clone(),
                        },
                    )
                })
                .collect(),
            stall_timeout: c.stall_timeout.0,
            ..Self::default()
        }
    }

    /// Whether `host` is spoken to over plain HTTP.
    pub fn is_insecure(&self, host: &str) -> bool {
        self.insecure_hosts.iter().any(|h| h == host)
    }

    /// The host a pull of a reference on `host` goes to: the mirror, when one is set.
    pub fn pull_host<'a>(&'a self, host: &'a str) -> &'a str {
        self.mirror.as_deref().unwrap_or(host)
    }

    /// The login for `host`: its own entry in `auths`, else the default one.
    pub fn login_for(&self, host: &str) -> &Login {
        self.auths.get(host).unwrap_or(&self.default_login)
    }

    /// Reads the credentials for `host`.
    ///
    /// # Errors
    /// [`OciError::BadSettings`] for a username without a password file or the reverse;
    /// [`OciError::Credentials`] when the password file cannot be read.
    pub(super) fn credentials(&self, host: &str) -> Result<Credentials, OciError> {
        let (login, setting) = match self.auths.get(host) {
            Some(l) => (l, format!("registry.auths.\"{host}\"")),
            None => (&self.default_login, "registry".to_owned()),
        };
        match (&login.username, &login.password_file) {
            (None, None) => Ok(Credentials::Anonymous),
            (Some(_), None) => Err(OciError::BadSettings {
                reason: format!("{setting} has a username but no password_file"),
            }),
            (None, Some(_)) => Err(OciError::BadSettings {
                reason: format!("{setting} has a password_file but no username"),
            }),
            (Some(user), Some(path)) => {
                let mut password =
                    fs_err::read_to_string(path).map_err(|e| OciError::Credentials {
                        host: host.to_owned(),
                        path: path.clone(),
                        source: e,
                    })?;
                if password.ends_with('\n') {
                    password.pop();
                    if password.ends_with('\r') {
                        password.pop();
                    }
                }
                Ok(Credentials::Basic {
                    username: user.clone(),
                    password: Secret(password),
                })
            }
        }
    }

    pub(super) fn client(&self) -> Result<Client, OciError> {
        crate::tls::ensure_provider();
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(self.insecure_hosts.clone()),
            connect_timeout: Some(self.connect_timeout),
            read_timeout: Some(self.stall_timeout),
            use_monolithic_push: true,
            platform_resolver: None,
            user_agent: USER_AGENT,
            ..ClientConfig::default()
        };
        Client::try_from(config).map_err(|e| OciError::Remote {
            what: "the registry client".into(),
            problem: RemoteProblem::Protocol {
                detail: "cannot be set up".into(),
            },
            source: Some(Box::new(e)),
        })
    }
}

/// A password, never printed.
#[derive(Clone)]
pub(super) struct Secret(pub(super) String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone)]
pub(super) enum Credentials {
    Anonymous,
    Basic { username: String, password: Secret },
}

impl Credentials {
    pub(super) fn username(&self) -> Option<String> {
        match self {
            Self::Anonymous => None,
            Self::Basic { username, .. } => Some(username.clone()),
        }
    }

    pub(super) fn to_auth(&self) -> RegistryAuth {
        match self {
            Self::Anonymous => RegistryAuth::Anonymous,
            Self::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.0.clone())
            }
        }
    }
}

//! What a failed registry request means: permanent or transient, and what to tell a person.

use super::*;

/// What a request concerns, for classifying its failures.
#[derive(Debug, Clone)]
pub(super) struct ReqCtx {
    pub(super) what: String,
    pub(super) host: String,
    pub(super) username: Option<String>,
    pub(super) insecure: bool,
}

impl ReqCtx {
    pub(super) fn remote(&self, problem: RemoteProblem, e: OciDistributionError) -> OciError {
        OciError::Remote {
            what: self.what.clone(),
            problem,
            source: Some(Box::new(e)),
        }
    }

    pub(super) fn for_what(&self, what: String) -> Self {
        Self {
            what,
            ..self.clone()
        }
    }
}

/// Turns an `oci-client` error into a permanent or transient failure with a message a
/// person can act on.
pub(super) fn classify(e: OciDistributionError, cx: &ReqCtx) -> Failure {
    use OciDistributionError as E;
    let unauthorized = || RemoteProblem::Unauthorized {
        host: cx.host.clone(),
        username: cx.username.clone(),
    };
    match &e {
        E::UnauthorizedError { .. } | E::AuthenticationFailure(_) => {
            Failure::permanent(cx.remote(unauthorized(), e))
        }
        E::RegistryError { envelope, .. } => {
            let detail = envelope
                .errors
                .iter()
                .map(|x| format!("{}: {}", code_name(&x.code), x.message))
                .collect::<Vec<_>>()
                .join("; ");
            match envelope.errors.first().map(|x| &x.code) {
                Some(
                    OciErrorCode::ManifestUnknown
                    | OciErrorCode::BlobUnknown
                    | OciErrorCode::NameUnknown
                    | OciErrorCode::NotFound
                    | OciErrorCode::ManifestBlobUnknown,
                ) => Failure::permanent(cx.remote(RemoteProblem::NotFound { detail }, e)),
                Some(OciErrorCode::Unauthorized) => {
                    Failure::permanent(cx.remote(unauthorized(), e))
                }
                Some(OciErrorCode::Denied) => Failure::permanent(cx.remote(
                    RemoteProblem::Forbidden {
                        host: cx.host.clone(),
                    },
                    e,
                )),
                Some(OciErrorCode::Toomanyrequests) => Failure::for_status(
                    429,
                    cx.remote(
                        RemoteProblem::Status {
                            status: Some(429),
                            detail,
                        },
                        e,
                    ),
                ),
                _ => Failure::permanent(cx.remote(
                    RemoteProblem::Status {
                        status: None,
                        detail,
                    },
                    e,
                )),
            }
        }
        E::ServerError { code, message, .. } => {
            let code = *code;
            let problem = status_problem(code, short(message), cx);
            Failure::for_status(code, cx.remote(problem, e))
        }
        E::RequestError(r) if r.status().is_some() => {
            let code = r.status().map_or(0, |s| s.as_u16());
            let detail = match code {
                404 => "no such blob or manifest",
                _ => "refused",
            };
            let problem = status_problem(code, detail.into(), cx);
            Failure::for_status(code, cx.remote(problem, e))
        }
        E::RequestError(r) => {
            transport_problem(r, &cx.host, cx.insecure).into_failure(|p| cx.remote(p, e))
        }
        E::IoError(_) => Failure::transient(cx.remote(RemoteProblem::Network { attempts: 1 }, e)),
        E::DigestError(DigestError::VerificationError { expected, actual }) => {
            match (Digest::parse(expected), Digest::parse(actual)) {
                (Ok(expected), Ok(actual)) => {
                    Failure::permanent(OciError::Archive(ArchiveError::DigestMismatch {
                        what: cx.what.clone(),
                        expected,
                        actual,
                    }))
                }
                _ => Failure::permanent(cx.remote(
                    RemoteProblem::Protocol {
                        detail: "the content does not match its digest".into(),
                    },
                    e,
                )),
            }
        }
        _ => Failure::permanent(cx.remote(
            RemoteProblem::Protocol {
                detail: "unexpected answer from the registry".into(),
            },
            e,
        )),
    }
}

pub(super) fn code_name(code: &OciErrorCode) -> String {
    match serde_json::to_value(code) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{code:?}"),
    }
}

/// Whether a stream error is `oci-client`'s own digest check at the end of a full body.
pub(super) fn is_end_check(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<DigestError>())
}

/// What an HTTP `status` from a registry means for a person: credentials refused (401),
/// access denied (403), not found (404), or another status.
fn status_problem(code: u16, detail: String, cx: &ReqCtx) -> RemoteProblem {
    match code {
        401 => RemoteProblem::Unauthorized {
            host: cx.host.clone(),
            username: cx.username.clone(),
        },
        403 => RemoteProblem::Forbidden {
            host: cx.host.clone(),
        },
        404 => RemoteProblem::NotFound { detail },
        _ => RemoteProblem::Status {
            status: Some(code),
            detail,
        },
    }
}

//! `outpost fleet push|verify|status`: publish a signed desired-state document to a registry,
//! check the one a reference names, and show what the daemon's fleet poller did.
//!
//! - `push DOC --to oci://host/repo:tag (--sign-key KEY | --signature FILE | --unsigned)`:
//!   validates the document, signs its exact bytes with a minisign secret key (or takes a
//!   signature made by `minisign -S`), and pushes both as an artifact of media type
//!   `application/vnd.outpost.fleet.v1+json`, with the registry settings of `--config`.
//! - `verify oci://... --key PUB...`: fetches the artifact and applies the daemon's own
//!   acceptance rule (a trusted signature, a valid document, not expired); `--save DIR` writes
//!   `document.json` and `document.json.minisig` for `minisign -V`.
//! - `status`: the `fleet` object of the daemon's `/status`.
//!
//! [`print_status_lines`] is the fleet part of plain `outpost status`.

use std::path::Path;

use outpost_api::{ApiClient, ClientErrorKind};
use outpost_cli::ExitStatus;
use outpost_cli::args::{FleetCommand, FleetPushArgs, FleetVerifyArgs, GlobalArgs};
use outpost_fetch::{Cancel, RegistrySettings};
use outpost_fleet::{
    Document, MAX_DOCUMENT_BYTES, MEDIA_TYPE, SIGNATURE_MEDIA_TYPE, SigningKey, Timestamp,
    TrustedKey,
};
use outpost_oci::{ArtifactPoll, ArtifactSource};
use outpost_types::source::OciReference;
use outpost_types::wire::{FleetStatus, StatusResponse, parse_rfc3339};

/// Runs `outpost fleet ...`.
pub(crate) fn run(global: &GlobalArgs, command: FleetCommand) -> ExitStatus {
    let (doing, result) = match &command {
        FleetCommand::Push(args) => ("pushing the fleet document", push(global, args)),
        FleetCommand::Verify(args) => ("verifying the fleet document", verify(global, args)),
        FleetCommand::Status => return status(global),
        FleetCommand::Report(args) => return super::fleet_report::run(global, args),
    };
    match result {
        Ok(()) => ExitStatus::Success,
        Err(message) => {
            eprintln!("error {doing}: {message}");
            if global.json {
                outpost_cli::output::print_error_json("fleet", &message);
            }
            ExitStatus::Failure
        }
    }
}

/// Parses `oci://host[:port]/repo:tag` (a digest is accepted where `tag_only` is false).
fn reference(what: &str, value: &str, tag_only: bool) -> Result<OciReference, String> {
    let rest = value.strip_prefix("oci://").ok_or_else(|| {
        format!("invalid {what} {value:?}: expected oci://host[:port]/repository:tag")
    })?;
    let r = OciReference::parse(rest).map_err(|e| format!("invalid {what} {value:?}: {e}"))?;
    if tag_only && (r.tag.is_none() || r.digest.is_some()) {
        return Err(format!(
            "invalid {what} {value:?}: push to a tag (oci://host[:port]/repository:tag), without a digest"
        ));
    }
    Ok(r)
}

fn registry_settings(global: &GlobalArgs) -> Result<RegistrySettings, String> {
    let config = global
        .load_config()
        .map_err(|e| outpost_types::error_chain(&e))?;
    Ok(RegistrySettings::from_config(&config.registry))
}

fn read_limited(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    let bytes = fs_err::read(path).map_err(|e| e.to_string())?;
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(format!(
            "{what} {} is over {MAX_DOCUMENT_BYTES} bytes",
            path.display()
        ));
    }
    Ok(bytes)
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    outpost_cli::runtime::current_thread().map_err(|e| format!("cannot start the runtime: {e}"))
}

fn push(global: &GlobalArgs, args: &FleetPushArgs) -> Result<(), String> {
    let target = reference("--to", &args.to, true)?;
    let bytes = read_limited(&args.doc, "the document")?;
    // Everything is checked before anything is sent.
    let doc = Document::from_json(&bytes).map_err(|e| e.to_string())?;
    let (signature, signed_by) = match (&args.sign_key, &args.signature) {
        (Some(key), _) => {
            let password = match &args.password_file {
                Some(p) => {
                    let mut text = fs_err::read_to_string(p).map_err(|e| e.to_string())?;
                    if text.ends_with('\n') {
                        text.pop();
                    }
                    Some(text)
                }
                None => None,
            };
            let key = SigningKey::from_file(key, password.as_deref()).map_err(|e| {
                if matches!(e, outpost_fleet::FleetError::PasswordNeeded { .. }) {
                    format!("{e} (give it with --password-file)")
                } else {
                    e.to_string()
                }
            })?;
            let (_, sig) = key.sign_document(&bytes).map_err(|e| e.to_string())?;
            (Some(sig), Some(key.key_id().to_owned()))
        }
        (None, Some(path)) => (Some(read_limited(path, "the signature")?), None),
        (None, None) => (None, None),
    };
    let settings = registry_settings(global)?;
    let mut blobs: Vec<(&str, &[u8])> = vec![(MEDIA_TYPE, &bytes)];
    if let Some(sig) = &signature {
        blobs.push((SIGNATURE_MEDIA_TYPE, sig));
    }
    let pushed = runtime()?
        .block_on(outpost_oci::push_artifact(
            &settings,
            &target,
            MEDIA_TYPE,
            &blobs,
            &Cancel::new(),
        ))
        .map_err(|e| outpost_types::error_chain(&e))?;
    if global.json {
        outpost_cli::output::print_json(&serde_json::json!({
            "reference": pushed.reference,
            "digest": pushed.digest.to_string(),
            "generation": doc.generation,
            "signed": signature.is_some(),
            "signed_by": signed_by,
        }));
    } else if global.quiet == 0 {
        let how = match (&signature, &signed_by) {
            (None, _) => "UNSIGNED".to_owned(),
            (Some(_), Some(id)) => format!("signed by key {id}"),
            (Some(_), None) => "with the given signature".to_owned(),
        };
        println!(
            "pushed generation {} to {} ({how})\nmanifest {}",
            doc.generation, pushed.reference, pushed.digest
        );
    }
    Ok(())
}

fn verify(global: &GlobalArgs, args: &FleetVerifyArgs) -> Result<(), String> {
    let source = reference("reference", &args.source, false)?;
    let trusted = args
        .keys
        .iter()
        .map(|k| TrustedKey::from_file(k).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let settings = registry_settings(global)?;
    let artifact = runtime()?.block_on(async {
        let src = ArtifactSource::new(&settings, &source).map_err(|e| e.to_string())?;
        match src
            .poll(None, MAX_DOCUMENT_BYTES as u64, &Cancel::new())
            .await
            .map_err(|e| outpost_types::error_chain(&e))?
        {
            ArtifactPoll::Changed(a) => Ok(a),
            ArtifactPoll::Unchanged { .. } => Err("the registry answered nothing new".to_owned()),
        }
    })?;
    let bytes = artifact
        .blob(MEDIA_TYPE)
        .ok_or_else(|| format!("the artifact has no blob of media type {MEDIA_TYPE}"))?;
    let signature = artifact.blob(SIGNATURE_MEDIA_TYPE);
    if let Some(dir) = &args.save {
        fs_err::create_dir_all(dir).map_err(|e| e.to_string())?;
        fs_err::write(dir.join("document.json"), bytes).map_err(|e| e.to_string())?;
        if let Some(sig) = signature {
            fs_err::write(dir.join("document.json.minisig"), sig).map_err(|e| e.to_string())?;
        }
    }
    let accepted = outpost_fleet::accept(bytes, signature, &trusted, None, Timestamp::now(), false)
        .map_err(|e| format!("{} ({})", e, e.reason()))?;
    let doc = &accepted.document;
    if global.json {
        outpost_cli::output::print_json(&serde_json::json!({
            "reference": format!("oci://{source}"),
            "digest": artifact.digest.to_string(),
            "generation": doc.generation,
            "expires": doc.expires.to_string(),
            "signed_by": accepted.signed_by,
            "sha256": accepted.sha256,
            "packages": doc.packages.keys().map(ToString::to_string).collect::<Vec<_>>(),
        }));
    } else if global.quiet == 0 {
        println!(
            "valid: generation {}, signed by key {}, expires {}\nmanifest {}\npackages: {}",
            doc.generation,
            accepted.signed_by.as_deref().unwrap_or("-"),
            doc.expires,
            artifact.digest,
            doc.packages
                .keys()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

fn status(global: &GlobalArgs) -> ExitStatus {
    let doing = "getting the fleet status";
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error {doing}: {e}");
            return ExitStatus::Failure;
        }
    };
    let socket = super::client::pick_socket(&global.daemon_sockets());
    let client = ApiClient::new(&socket);
    let status: StatusResponse = match rt.block_on(client.get("/status")) {
        Ok(s) => s,
        Err(e) => {
            if e.kind() == ClientErrorKind::NotReachable {
                return super::client::report_client_error(global, doing, &socket, &e);
            }
            eprintln!("error {doing}: {e}");
            return ExitStatus::Failure;
        }
    };
    let Some(fleet) = status.fleet else {
        let message = "the daemon has no fleet: section in its configuration";
        eprintln!("error {doing}: {message}");
        if global.json {
            outpost_cli::output::print_error_json("fleet_not_configured", message);
        }
        return ExitStatus::Failure;
    };
    if global.json {
        outpost_cli::output::print_json(&fleet);
        return ExitStatus::Success;
    }
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
    println!("source:             {}", fleet.source);
    println!(
        "applied generation: {}",
        or_dash(fleet.applied_generation.map(|g| g.to_string()))
    );
    println!("applied digest:     {}", or_dash(fleet.applied_digest));
    println!(
        "signed by:          {}",
        if fleet.unsigned {
            "UNSIGNED (fleet.allow_unsigned is on)".to_owned()
        } else {
            or_dash(fleet.signed_by)
        }
    );
    println!(
        "converged:          {}",
        if fleet.converged { "yes" } else { "no" }
    );
    println!("last poll:          {}", or_dash(fleet.last_poll_at));
    if let Some(e) = fleet.last_error {
        println!(
            "last error:         {} ({})",
            e,
            fleet.last_error_reason.unwrap_or_default()
        );
    }
    if !fleet.managed.is_empty() {
        println!("managed:            {}", fleet.managed.join(", "));
    }
    for (package, why) in &fleet.skipped {
        println!("not in experiment:  {package} ({why})");
    }
    if fleet.allow_unsigned {
        println!("WARNING: fleet.allow_unsigned is on: unsigned documents are accepted");
    }
    ExitStatus::Success
}

/// The fleet lines of plain `outpost status`, under the daemon's version:
///
/// ```text
/// fleet: oci://registry.example/fleet/desired:prod, generation 7, converged: yes, last poll 3s ago
/// fleet error (registry): connection refused
/// WARNING: fleet.allow_unsigned is on: unsigned documents are accepted
/// ```
///
/// The error line is there only when the last poll failed, cut to one short line unless
/// `wide`; the warning only with `fleet.allow_unsigned`, and says when the applied document
/// came unsigned. Returns whether the error was cut.
pub(super) fn print_status_lines(fleet: &FleetStatus, wide: bool) -> bool {
    let generation = fleet.applied_generation.map_or_else(
        || "no document applied".to_owned(),
        |g| format!("generation {g}"),
    );
    let poll = match fleet.last_poll_at.as_deref() {
        None => "not polled yet".to_owned(),
        Some(at) => match parse_rfc3339(at) {
            Some(ms) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                let age = std::time::Duration::from_millis(now.saturating_sub(ms));
                format!("last poll {} ago", super::client::compact_age(age))
            }
            None => format!("last poll {at}"),
        },
    };
    println!(
        "fleet: {}, {generation}, converged: {}, {poll}",
        fleet.source,
        if fleet.converged { "yes" } else { "no" }
    );
    let mut cut = false;
    if let Some(error) = &fleet.last_error {
        let message = if wide {
            error.clone()
        } else {
            let (m, c) = super::client::one_line(error, super::client::SHORT_ERROR);
            cut = c;
            m
        };
        match fleet.last_error_reason.as_deref() {
            Some(reason) => println!("fleet error ({reason}): {message}"),
            None => println!("fleet error: {message}"),
        }
    }
    if fleet.allow_unsigned {
        println!(
            "WARNING: fleet.allow_unsigned is on: unsigned documents are accepted{}",
            if fleet.unsigned {
                "; the applied document is UNSIGNED"
            } else {
                ""
            }
        );
    }
    cut
}

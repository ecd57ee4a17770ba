//! One ACME order (RFC 8555 §7.4): the account (stored, or created), the authorizations
//! answered by the configured challenge, finalisation with a fresh key, the chain.

use std::sync::Arc;
use std::time::Duration;

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};
use rustls::sign::CertifiedKey;
use rustls_pki_types::PrivateKeyDer;

use super::client::Http;
use super::storage::Storage;
use super::State;
use crate::config::{Acme, AcmeChallenge};

/// How long the directory may take to validate the challenges, and to issue.
const POLL: RetryPolicy = RetryPolicy::new()
    .initial_delay(Duration::from_millis(250))
    .backoff(1.5)
    .timeout(Duration::from_secs(90));

/// The account of `settings.directory`: restored from storage, or created (and stored;
/// a storage failure is logged and the account used anyway).
///
/// # Errors
/// The directory cannot be reached or refuses the account.
pub async fn account(settings: &Acme, storage: &Storage) -> Result<Account, String> {
    let http = || Http::new(settings.ca.as_deref()).map(Box::new);
    match storage.load_account(&settings.directory) {
        Ok(Some(credentials)) => {
            return Account::builder_with_http(http()?)
                .from_credentials(credentials)
                .await
                .map_err(|e| format!("restoring the account: {e}"));
        }
        Ok(None) => {}
        Err(why) => tracing::warn!("acme: {why}; creating a new account"),
    }
    let contact = settings.email.as_ref().map(|e| format!("mailto:{e}"));
    let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, credentials) = Account::builder_with_http(http()?)
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            settings.directory.clone(),
            None,
        )
        .await
        .map_err(|e| format!("creating an account at {}: {e}", settings.directory))?;
    if let Err(why) = storage.save_account(&settings.directory, &credentials) {
        tracing::warn!("acme: the account is not stored ({why}); a restart creates another");
    }
    Ok(account)
}

/// Challenge answers placed in `State` for one order, taken back when it ends (whether
/// it succeeded, failed or was dropped by a timeout).
struct Placed<'s> {
    state: &'s State,
    tokens: Vec<String>,
    names: Vec<String>,
}

impl Drop for Placed<'_> {
    fn drop(&mut self) {
        self.state.withdraw(&self.tokens, &self.names);
    }
}

/// Orders a certificate for `settings.domains`; returns its chain and private key (PEM).
///
/// # Errors
/// Any step refused or failed, said for the log.
pub async fn order(
    account: &Account,
    settings: &Acme,
    state: &State,
) -> Result<(String, String), String> {
    let identifiers: Vec<Identifier> = settings
        .domains
        .iter()
        .map(|d| Identifier::Dns(d.clone()))
        .collect();
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .map_err(|e| format!("new order: {e}"))?;
    let kind = match settings.challenge {
        AcmeChallenge::Http01 => ChallengeType::Http01,
        AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
    };
    let mut placed = Placed {
        state,
        tokens: Vec::new(),
        names: Vec::new(),
    };
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz.map_err(|e| format!("authorization: {e}"))?;
        match authz.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => return Err(format!("authorization is {other:?}")),
        }
        let mut challenge = authz.challenge(kind.clone()).ok_or_else(|| {
            format!(
                "the directory offers no {} challenge",
                settings.challenge.as_str()
            )
        })?;
        let Identifier::Dns(name) = challenge.identifier().identifier.clone() else {
            return Err("authorization for a non-DNS identifier".into());
        };
        let key_authorization = challenge.key_authorization();
        match settings.challenge {
            AcmeChallenge::Http01 => {
                state.place_token(&challenge.token, key_authorization.as_str());
                placed.tokens.push(challenge.token.clone());
            }
            AcmeChallenge::TlsAlpn01 => {
                let cert = alpn_cert(&name, key_authorization.digest().as_ref())?;
                state.place_alpn(&name, cert);
                placed.names.push(name.to_ascii_lowercase());
            }
        }
        challenge
            .set_ready()
            .await
            .map_err(|e| format!("{name}: challenge ready: {e}"))?;
    }
    let status = order
        .poll_ready(&POLL)
        .await
        .map_err(|e| format!("waiting for validation: {e}"))?;
    drop(placed);
    if status != OrderStatus::Ready {
        let why = order
            .state()
            .error
            .as_ref()
            .map(|p| format!(": {p}"))
            .unwrap_or_default();
        return Err(format!("the order is {status:?}{why}"));
    }
    let key = order
        .finalize()
        .await
        .map_err(|e| format!("finalize: {e}"))?;
    let chain = order
        .poll_certificate(&POLL)
        .await
        .map_err(|e| format!("certificate: {e}"))?;
    Ok((chain, key))
}

/// The TLS-ALPN-01 certificate of `name` (RFC 8737 §3): self-signed, for `name` only,
/// with the critical acmeIdentifier extension holding the key authorization's SHA-256.
fn alpn_cert(name: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, String> {
    let fail = |e: rcgen::Error| format!("{name}: challenge certificate: {e}");
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).map_err(fail)?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate().map_err(fail)?;
    let cert = params.self_signed(&key).map_err(fail)?;
    let key_der = PrivateKeyDer::Pkcs8(key.serialize_der().into());
    // Not `CertifiedKey::from_der`: its key check parses the certificate with webpki,
    // which refuses the critical acmeIdentifier extension the validator looks for.
    let signing = crate::config::tls::provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| format!("{name}: challenge key: {e}"))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signing,
    )))
}

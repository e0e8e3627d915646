use std::borrow::Cow;

use super::query;

/// The request-target with the value of every `access_token` query parameter replaced by
/// `<redacted>`: repeated parameters too, and names that only decode to `access_token`
/// (`access%5Ftoken`, as Synapse would read them). Everything else is kept byte for byte;
/// a target with nothing to redact is returned borrowed. An empty value stays empty (it
/// shows that an empty token was sent, which reveals nothing).
///
/// Every request-target the sensor writes, in logs, alerts or the ledger, goes through this.
pub fn redact_target(target: &str) -> Cow<'_, str> {
    let Some((path, query)) = target.split_once('?') else {
        return Cow::Borrowed(target);
    };
    let secret = |piece: &str| match piece.split_once('=') {
        Some((name, value)) => !value.is_empty() && query::is_access_token(name),
        None => false,
    };
    if !query.split('&').any(secret) {
        return Cow::Borrowed(target);
    }
    let mut out = String::with_capacity(target.len() + 16);
    out.push_str(path);
    out.push('?');
    for (i, piece) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match piece.split_once('=') {
            Some((name, _)) if secret(piece) => {
                out.push_str(name);
                out.push_str("=<redacted>");
            }
            _ => out.push_str(piece),
        }
    }
    Cow::Owned(out)
}

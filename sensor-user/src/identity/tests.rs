mod fingerprint;
mod redact;
mod synapse_token;
mod token;

// ETSI GS QKD 014 v1.1.1 server of the agent (HTTPS with mutual TLS): see sae_keys.hpp.

// Pebble (Let's Encrypt's ACME test server) newer than Debian's 2.4: ACME Renewal Information
// and certificate profiles, for the certificate tests that need them. Its own module.
module nova.infra.dev/tests/control-plane/pebble

go 1.26.0

require github.com/letsencrypt/pebble/v2 v2.10.1 // indirect

#!/bin/sh
# Bootstrap for deploy/compose.yaml: one script, three roles.
#
#   compose-bootstrap.sh hub-init          create the hub (keys, database, first admin key) and a
#                                          self-signed TLS certificate; publish the certificate
#                                          (not the key) to the shared bootstrap volume
#   compose-bootstrap.sh provision         with the hub up: create the site, its owner key and
#                                          one registration token per door, each token in its
#                                          own 0600 file on the bootstrap volume
#   compose-bootstrap.sh agent DOOR [ARG]  register DOOR with its token (once; the token file is
#                                          deleted after use), then exec `doorkeeper agent run
#                                          --data $DK_DATA ARG...`
#
# Every step is idempotent, so `docker compose up` can run again. Tokens are secrets: they never
# appear in compose.yaml, only in files on the bootstrap volume. Nothing from a file or the
# environment is evaluated; names are checked against a strict pattern before they are used
# in a path.
#
# Settings (environment; the defaults are the container paths of compose.yaml):
#   DK_DATA        this service's data directory              (/data)
#   DK_BOOTSTRAP   shared volume: CA certificate, tokens      (/bootstrap)
#   DK_OWNER_DIR   where provision writes the site owner key  (/owner)
#   DK_HUB         hub address as agents and operators see it (hub:50051)
#   DK_SITE        site name                                  (compose-site)
#   DK_DOORS       door names, space separated                (door1 door2 door3)
#   DK_TLS_SAN     subjectAltName of the hub certificate      (DNS:hub,DNS:localhost,IP:127.0.0.1)
#   DK_TOKEN_TTL   registration token lifetime, seconds       (86400)
set -eu

DK_DATA=${DK_DATA:-/data}
DK_BOOTSTRAP=${DK_BOOTSTRAP:-/bootstrap}
DK_OWNER_DIR=${DK_OWNER_DIR:-/owner}
DK_HUB=${DK_HUB:-hub:50051}
DK_SITE=${DK_SITE:-compose-site}
DK_DOORS=${DK_DOORS:-door1 door2 door3}
DK_TLS_SAN=${DK_TLS_SAN:-DNS:hub,DNS:localhost,IP:127.0.0.1}
DK_TOKEN_TTL=${DK_TOKEN_TTL:-86400}

umask 077
NL='
'

say() { printf 'compose-bootstrap: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# A name used in a file path or passed to the hub: letters, digits, '_' and '-', 1-64 chars.
check_name() {
    case $2 in
        '' | *[!A-Za-z0-9_-]*) die "$1 '$2' must be 1-64 letters, digits, '_' or '-'" ;;
    esac
    [ "${#2}" -le 64 ] || die "$1 '$2' is longer than 64 characters"
}

# The last line of a command's output (`site add` / `device add` print the id or token there).
last_line() {
    printf '%s' "${1##*"$NL"}"
}

# A rename or a new file survives a power cut only once the file and its directory are
# fsynced (`sync FILE...`, coreutils 8.24+; plain `sync` where file arguments are unsupported).
durable() { # PATH...: fsync each path, then each one's directory
    for p in "$@"; do
        sync "$p" "$(dirname "$p")" 2>/dev/null || sync
    done
}

write_secret() { # FILE CONTENT: written to a temp file, then renamed (never half a token)
    printf '%s\n' "$2" >"$1.tmp"
    mv -f "$1.tmp" "$1"
    durable "$1"
}

hub_init() {
    if [ -f "$DK_DATA/keys/hub.sign.key" ]; then
        say "hub already initialised in $DK_DATA"
    else
        doorkeeper hub init --data "$DK_DATA" >/dev/null
        say "hub initialised in $DK_DATA (first admin key: $DK_DATA/operator.key)"
    fi
    mkdir -p "$DK_DATA/tls"
    if [ ! -f "$DK_DATA/tls/hub.crt" ] || [ ! -f "$DK_DATA/tls/hub.key" ]; then
        command -v openssl >/dev/null 2>&1 || die "openssl is needed to make the hub's TLS certificate"
        # Self-signed for the compose demo; a fleet uses a certificate from its own CA.
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 -days 825 \
            -subj "/CN=doorkeeper-hub" -addext "subjectAltName=$DK_TLS_SAN" \
            -keyout "$DK_DATA/tls/hub.key.tmp" -out "$DK_DATA/tls/hub.crt.tmp" 2>/dev/null \
            || die "openssl could not create the TLS certificate"
        mv -f "$DK_DATA/tls/hub.key.tmp" "$DK_DATA/tls/hub.key"
        mv -f "$DK_DATA/tls/hub.crt.tmp" "$DK_DATA/tls/hub.crt"
        durable "$DK_DATA/tls/hub.key" "$DK_DATA/tls/hub.crt" "$DK_DATA/tls"
        say "TLS certificate for $DK_TLS_SAN written to $DK_DATA/tls/"
    fi
    mkdir -p "$DK_BOOTSTRAP"
    # Only the certificate goes to the shared volume; the key stays with the hub.
    cp "$DK_DATA/tls/hub.crt" "$DK_BOOTSTRAP/hub-ca.pem.tmp"
    chmod 0644 "$DK_BOOTSTRAP/hub-ca.pem.tmp"
    mv -f "$DK_BOOTSTRAP/hub-ca.pem.tmp" "$DK_BOOTSTRAP/hub-ca.pem"
    durable "$DK_BOOTSTRAP/hub-ca.pem" "$DK_BOOTSTRAP"
}

provision() {
    check_name site "$DK_SITE"
    case $DK_TOKEN_TTL in '' | *[!0-9]*) die "DK_TOKEN_TTL must be a number of seconds" ;; esac
    [ -f "$DK_BOOTSTRAP/hub-ca.pem" ] || die "$DK_BOOTSTRAP/hub-ca.pem is missing: run hub-init first"
    [ -f "$DK_DATA/operator.key" ] || die "$DK_DATA/operator.key is missing: run hub-init first"
    # Read by `site add`, `device add` and `site owner-key` (their envvars).
    DOORKEEPER_HUB=$DK_HUB
    DOORKEEPER_OPERATOR_KEY=$DK_DATA/operator.key
    export DOORKEEPER_HUB DOORKEEPER_OPERATOR_KEY
    ca=$DK_BOOTSTRAP/hub-ca.pem
    mkdir -p "$DK_BOOTSTRAP/tokens" "$DK_BOOTSTRAP/done"

    if [ ! -f "$DK_BOOTSTRAP/done/site" ]; then
        doorkeeper site add "$DK_SITE" --tls-ca "$ca" >/dev/null
        : >"$DK_BOOTSTRAP/done/site"
        say "site $DK_SITE created"
    fi
    if [ ! -f "$DK_BOOTSTRAP/done/owner-key" ]; then
        # The data owner's private key: only the provision service mounts this volume (never
        # a door, never the hub). Copy it off and delete it: it decrypts the entry logs.
        mkdir -p "$DK_OWNER_DIR"
        doorkeeper site owner-key --site "$DK_SITE" --out "$DK_OWNER_DIR/owner.key" --tls-ca "$ca" >/dev/null
        : >"$DK_BOOTSTRAP/done/owner-key"
        say "site owner key written to $DK_OWNER_DIR/owner.key (move it to the data owner)"
    fi
    for door in $DK_DOORS; do
        check_name door "$door"
        # done/DOOR: a token was issued once; the door name is unique in the site, so a second
        # `device add` would be refused anyway.
        [ -f "$DK_BOOTSTRAP/done/$door" ] && continue
        out=$(doorkeeper device add --site "$DK_SITE" --name "$door" --ttl "$DK_TOKEN_TTL" --tls-ca "$ca")
        token=$(last_line "$out")
        case $token in '' | *[!A-Za-z0-9-]*) die "unexpected token format from device add for $door" ;; esac
        write_secret "$DK_BOOTSTRAP/tokens/$door.token" "$token"
        : >"$DK_BOOTSTRAP/done/$door"
        say "door $door added; token in $DK_BOOTSTRAP/tokens/$door.token"
    done
}

agent() {
    [ "$#" -ge 1 ] || die "usage: $0 agent DOOR [agent run options]"
    door=$1
    shift
    check_name door "$door"
    if [ -f "$DK_DATA/identity.json" ]; then
        say "door $door already registered"
    else
        token_file=$DK_BOOTSTRAP/tokens/$door.token
        [ -f "$token_file" ] || die "no token for $door at $token_file (provision first)"
        IFS= read -r token <"$token_file" || [ -n "${token:-}" ] || die "empty token file $token_file"
        case $token in '' | *[!A-Za-z0-9-]*) die "token file $token_file is malformed" ;; esac
        mkdir -p "$DK_DATA"
        # The agent remembers the CA's path: keep a copy inside its own data directory.
        cp "$DK_BOOTSTRAP/hub-ca.pem" "$DK_DATA/hub-ca.pem"
        doorkeeper agent init --data "$DK_DATA" --hub "$DK_HUB" --token "$token" \
            --tls-ca "$DK_DATA/hub-ca.pem" >/dev/null
        rm -f "$token_file" # one-time: used up
        say "door $door registered"
    fi
    exec doorkeeper agent run --data "$DK_DATA" "$@"
}

[ "$#" -ge 1 ] || die "usage: $0 hub-init | provision | agent DOOR [agent run options]"
role=$1
shift
case $role in
    hub-init) hub_init ;;
    provision) provision ;;
    agent) agent "$@" ;;
    *) die "unknown role '$role' (hub-init, provision, agent)" ;;
esac

#!/bin/sh
# /usr/local/bin/csbs: the csbs command line with the deployment's settings, the same the
# units read (/etc/csbs/csbs.env, then /etc/csbs/local.env), and the data directory of
# csbs-serve.service, so that on an API machine commands reach the local `csbs serve`
# over its control socket. Run it as the service's user (sudo -u csbs csbs doctor) or,
# on a worker host, as root.
set -a
. /etc/csbs/csbs.env
if [ -r /etc/csbs/local.env ]; then . /etc/csbs/local.env; fi
set +a
: "${CSBS_DATA_DIR:=/var/lib/csbs}"
export CSBS_DATA_DIR
exec /opt/csbs/venv/bin/csbs "$@"

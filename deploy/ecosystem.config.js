// pm2 recipe for a Leoma validator:  pm2 start deploy/ecosystem.config.js && pm2 save
// Settings come from .env in `cwd` (start from env.validator.example). Install as the image
// does: a virtualenv with this repository's wheel (`python3 -m venv /opt/leoma &&
// /opt/leoma/bin/pip install leoma-*.whl`), or set LEOMA_BIN to your `leoma`.
//
// One process runs every role (`leoma serve`). LEOMA_SPLIT=1 runs the sampler and the weight
// setter as two processes instead (`leoma servers sampler` / `leoma servers validator`): each is
// `leoma serve` with fewer roles, both share the state directory (one event log), each serves
// its own /metrics and /healthz. Never run both layouts at once.
//
// pm2 sends SIGINT on stop and waits `kill_timeout` ms before SIGKILL: long enough to publish
// the own log (LEOMA_FLUSH_TIMEOUT, 30 s).
const bin = process.env.LEOMA_BIN || "/opt/leoma/bin/leoma";
const cwd = process.env.LEOMA_HOME || process.cwd();

function leoma(name, args) {
  return {
    name,
    script: bin,
    args,
    interpreter: "none",
    cwd,
    autorestart: true,
    max_restarts: 50,
    min_uptime: "60s",
    restart_delay: 5000,
    exp_backoff_restart_delay: 1000,
    kill_timeout: 60000,
    env: {
      PYTHONUNBUFFERED: "1",
    },
  };
}

module.exports = {
  apps: process.env.LEOMA_SPLIT === "1"
    ? [
        leoma("leoma-sampler", "servers sampler --metrics-addr 127.0.0.1:9109"),
        leoma("leoma-weights", "servers validator --metrics-addr 127.0.0.1:9108"),
      ]
    : [leoma("leoma-validator", "serve")],
};

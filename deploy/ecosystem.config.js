// pm2 recipe for a Leoma validator:  pm2 start deploy/ecosystem.config.js && pm2 save
// Settings come from .env in `cwd` (start from env.validator.example). pm2 sends SIGINT on stop
// and waits `kill_timeout` ms before SIGKILL: long enough to publish the own log.
module.exports = {
  apps: [
    {
      name: "leoma-validator",
      script: "leoma",
      args: "serve",
      interpreter: "none",
      cwd: process.env.LEOMA_HOME || process.cwd(),
      autorestart: true,
      max_restarts: 50,
      min_uptime: "60s",
      restart_delay: 5000,
      exp_backoff_restart_delay: 1000,
      kill_timeout: 60000,
      env: {
        PYTHONUNBUFFERED: "1",
      },
    },
  ],
};

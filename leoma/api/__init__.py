"""The owner's HTTP API and dashboard, served from projections of an event log.

The API keeps its own `EventLog` (origin = the API's identity). It holds

* the events of every allowlisted validator, imported from their public mirrors (`feed`);
* the API's own events: `admin_acted` (validators and blacklist changed, by whom) and
  `miner_report_received` (the validators' signed miner reports).

Every response is computed from that log (`state.ApiState` folds it incrementally, `views`
shapes the seed's routes from it); nothing is kept in a second store. The leaderboard is the
validators' own epoch decision (`projections.epoch`), so the dashboard and the chain can be
compared, and disagreements between validators are shown.

    app.py        starlette routes, middleware (CORS, body limit, JSON errors), `create_app`
    auth.py       the seed's hotkey-signature headers, expiry, replay refusal, admin check
    state.py      the incremental fold of the log (registry, reports, tasks, decisions)
    miners.py     the majority consensus of miner reports (seed-spec §7.5)
    views.py      the seed's response shapes built from the fold
    feed.py       importing validators' mirrors into the API's log
    client.py     a signed HTTP client for the admin command line
    settings.py   `ApiSettings` from the environment (seed-spec §8.2)
    static/       the dashboard page (vanilla JS, no build step)
"""

"""`doorkeeper console`: the web console for the people who run the compounds.

A Starlette application on the operator's machine. It talks to the hub only through the
signed Admin API with the operator's key (the hub gains no new way in; roles and the audit
trail apply unchanged). Face photos are turned into templates here; only templates reach
the hub, and neither photos nor the key reach the browser.

`command` is the click command, `app` the routes and pages, `sessions` the login token,
sessions and CSRF, `hubapi` the admin calls and their errors, `fleetwatch` the fleet poller
(live overview, time to converge), `plots` the server-side SVG, `enrolment` photos and bulk
imports.
"""

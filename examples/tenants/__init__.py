"""Per-tenant rate limiters: one processhub worker per tenant, behind a JSON HTTP front.

Modules: :mod:`.limiter` (the pure token bucket), :mod:`.worker` (the child that owns one
tenant's bucket and hands it over when it moves), :mod:`.httpd` (a tiny HTTP/1.1 server),
:mod:`.front` (the HTTP routes, which reach tenants through ``hub.call``) and :mod:`.app`
(what ``processhub node --app examples.tenants.app`` loads). See README.md beside this file.
"""

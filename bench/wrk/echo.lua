-- The REST row of `make bench`: every wrk request is POST /api/v1/echo with a small JSON message,
-- answered by the gateway through its echo backend. bench/run checks one reply with curl first.
wrk.method = "POST"
wrk.body = '{"message":"hello sockgate"}'
wrk.headers["Content-Type"] = "application/json"

"""stalwart: retries, circuit breakers, timeouts and deadlines for sync and async Python."""

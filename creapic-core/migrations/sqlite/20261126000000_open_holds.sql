-- Open holds that no job pays through (synchronous requests' holds), by age: the sweep that
-- releases the holds of requests whose process died reads only these.
CREATE INDEX holds_open_unpaid ON holds (created_at) WHERE closed_at IS NULL AND job_id IS NULL;

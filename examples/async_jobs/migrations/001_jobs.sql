-- Jobs wait in the queue until one worker claims them; each must be done exactly once.
CREATE TABLE jobs (
    id          bigserial   PRIMARY KEY,
    kind        text        NOT NULL,
    payload     jsonb       NOT NULL DEFAULT '{}',
    status      text        NOT NULL DEFAULT 'queued'
                            CHECK (status IN ('queued', 'running', 'done', 'failed')),
    attempts    integer     NOT NULL DEFAULT 0,
    claimed_by  text,
    enqueued_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);

-- What the claim query reads: only queued jobs, oldest first.
CREATE INDEX jobs_queued ON jobs (id) WHERE status = 'queued';

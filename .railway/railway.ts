// The whole Railway project for this repository: PostgreSQL, the API (web),
// the outbox worker and a daily cleanup (cron), all built from this repository.
//
//   cd .railway && npm ci             # the pinned `railway` SDK this file imports
//   railway link                      # pick the Railway project and environment
//   CURSOS_GITHUB_REPO=owner/name railway config plan    # preview
//   CURSOS_GITHUB_REPO=owner/name railway config apply   # apply
//
// Every command here is a Procfile line or a script in scripts/;
// tests/test_railway_iac.py evaluates this file and fails if they drift apart.
// docs/deploy-railway.md explains each value and the dashboard equivalent.
import { defineRailway, github, postgres, preserve, project, service } from "railway/iac";

// The GitHub repository Railway builds from (your fork). Read from the
// environment so the file never names someone else's repository by mistake.
const repository = process.env.CURSOS_GITHUB_REPO;
const branch = process.env.CURSOS_GITHUB_BRANCH ?? "main";

export default defineRailway((ctx) => {
  if (!repository) {
    throw new Error("Set CURSOS_GITHUB_REPO=owner/name (the GitHub repository Railway should build) and run again.");
  }
  const source = github(repository, { branch });

  const db = postgres("Postgres");

  // What every Django process of this project needs. DATABASE_URL is the
  // database's private, direct URL: the worker LISTENs for new messages,
  // which a PgBouncer in transaction mode would break.
  const django = {
    DATABASE_URL: db.env.DATABASE_URL,
    LOG_FORMAT: "json",
  };

  const web = service("web", {
    source,
    // Railpack installs requirements.txt; collecting the admin's static files
    // is ours to do. Needs no variables: it runs before a new service has any.
    build: "python manage.py collectstatic --noinput",
    // The Procfile's web line. gunicorn runs directly (no shell in between),
    // so Railway's SIGTERM reaches it.
    start: "gunicorn backend.wsgi -c gunicorn.conf.py",
    // The Procfile's release line: one command prepares the database.
    preDeploy: "python manage.py migrate --noinput",
    healthcheck: "/healthz",
    healthcheckTimeout: 120,
    deploy: {
      // Above gunicorn's graceful_timeout (30 s, gunicorn.conf.py): requests
      // in flight at a redeploy finish before Railway's SIGKILL.
      drainingSeconds: 45,
      // ON_FAILURE works on every plan (ALWAYS does not).
      restartPolicyType: "ON_FAILURE",
      restartPolicyMaxRetries: 10,
    },
    variables: {
      ...django,
      // SECRET: set once, never in this file:
      //   railway variables --service web --set "SECRET_KEY=<50+ random characters>"
      SECRET_KEY: preserve(),
      // Set in Railway: the sender of every email, e.g. Cursos <nao-responda@seu-dominio.com.br>
      DEFAULT_FROM_EMAIL: preserve(),
      // Optional, for custom domains: the service's Railway domain
      // (RAILWAY_PUBLIC_DOMAIN) is allowed and trusted for CSRF by itself.
      ALLOWED_HOSTS: preserve(),
      CSRF_TRUSTED_ORIGINS: preserve(),
      // SECRET: the provider's delivery events (delivered, bounced, spam) reach
      // web at /webhooks/anymail/<provider>/tracking/ with this basic auth,
      // "USER:PASS" (README, "Delivery events"). Unset, every event is refused.
      //   railway variables --service web --set "ANYMAIL_WEBHOOK_SECRET=<user>:<long random password>"
      ANYMAIL_WEBHOOK_SECRET: preserve(),
    },
  });

  // The worker and the cron job use web's SECRET_KEY, by reference. (The
  // sender, DEFAULT_FROM_EMAIL, is written into each email when web queues it.)
  const shared = {
    ...django,
    SECRET_KEY: web.env.SECRET_KEY,
  };

  const worker = service("worker", {
    source,
    // The Procfile's worker line. Without a start command of its own Railpack
    // would start the Procfile's web line here, and nothing would send email.
    start: "python manage.py outbox_worker",
    deploy: {
      // On SIGTERM the worker stops claiming and finishes the message in hand:
      // one send, bounded by OUTBOX_SEND_DEADLINE where that setting exists and
      // otherwise by EMAIL_TIMEOUT (10 s) per SMTP step and OUTBOX_SEND_TRIES (3),
      // then writes its outcome (OUTBOX_FINISH_WITHIN, 1 s). 600 s covers a send
      // deadline of up to nine minutes; tests/test_railway_iac.py checks it
      // against the settings. A worker killed sooner is safe but resends that
      // email once its lease (OUTBOX_LEASE_SECONDS) runs out.
      drainingSeconds: 600,
      restartPolicyType: "ON_FAILURE",
      restartPolicyMaxRetries: 10,
    },
    // No healthcheck (it serves no HTTP) and no domain.
    variables: {
      ...shared,
      // SECRETS, set in Railway (railway variables --service worker --set ...):
      // Railway blocks SMTP below the Pro plan; use an HTTP API through anymail,
      // e.g. EMAIL_BACKEND=anymail.backends.postmark.EmailBackend and its token.
      EMAIL_BACKEND: preserve(),
      ANYMAIL_POSTMARK_SERVER_TOKEN: preserve(),
      // On Pro, SMTP instead: smtp+tls://user:password@smtp.example.com:587
      EMAIL_URL: preserve(),
    },
  });

  const cron = service("cron", {
    source,
    // Deletes sent/cancelled outbox rows older than 30 days and idempotency
    // keys older than a day, then exits (a cron service must exit).
    start: "sh scripts/cron",
    deploy: {
      // Every day at 04:00 UTC (Railway's cron schedules are UTC): 01:00 in São Paulo.
      cronSchedule: "0 4 * * *",
      // A failed run is retried by the next day's run, not in a loop.
      restartPolicyType: "NEVER",
    },
    variables: shared,
  });

  return project("cursos", { resources: [db, web, worker, cron] });
});

// PostgreSQL for tests: the jest run's throwaway server (test/setup/postgres-global-setup.mjs starts it and puts
// its superuser URL in TOOLGATE_TEST_POSTGRES_URL) and one fresh database per caller, so test files running in
// parallel workers never see each other's tables.

import { randomBytes } from "node:crypto";
import { Client } from "pg";

export interface FreshDatabase {
  /** postgres://… URL of the new database (superuser). */
  url: string;
  /** The database's name. */
  name: string;
  /** Drops the database, ending its open sessions first. Safe to call twice. */
  drop(): Promise<void>;
}

/** The superuser URL of the run's PostgreSQL server (database `toolgate`); throws with the reason when there is none. */
export function postgresAdminUrl(): string {
  const url = process.env.TOOLGATE_TEST_POSTGRES_URL;
  if (url) return url;
  const why =
    process.env.TOOLGATE_TEST_POSTGRES_ERROR ??
    "TOOLGATE_TEST_POSTGRES_URL is not set (jest's globalSetup test/setup/postgres-global-setup.mjs starts a server; " +
      "run jest through `npm run jest`)";
  throw new Error(`no PostgreSQL server for tests: ${why}`);
}

async function withAdmin<T>(fn: (client: Client) => Promise<T>): Promise<T> {
  const client = new Client({ connectionString: postgresAdminUrl() });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

let counter = 0;

/** Creates a new, uniquely named, empty database on the run's server. */
export async function freshDatabase(): Promise<FreshDatabase> {
  counter += 1;
  const name = `tg_${process.pid}_${counter}_${randomBytes(4).toString("hex")}`;
  await withAdmin(async (client) => {
    for (let attempt = 0; ; attempt++) {
      try {
        await client.query(`CREATE DATABASE "${name}"`);
        return;
      } catch (err) {
        // 55006: template1 briefly in use by another CREATE DATABASE
        const code = (err as { code?: unknown }).code;
        if (code !== "55006" || attempt >= 20) throw err;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
  });
  const url = new URL(postgresAdminUrl());
  url.pathname = `/${name}`;
  let dropped = false;
  return {
    url: url.toString(),
    name,
    async drop(): Promise<void> {
      if (dropped) return;
      dropped = true;
      await withAdmin((client) => client.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`));
    },
  };
}

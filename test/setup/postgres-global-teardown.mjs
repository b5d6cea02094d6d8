// jest globalTeardown: stops the run's PostgreSQL server and removes its directory (see postgres-global-setup.mjs).

import { destroyServer } from "../../scripts/postgres.mjs";

export default async function globalTeardown() {
  const dir = globalThis.__TOOLGATE_TEST_POSTGRES_DIR;
  if (typeof dir !== "string") return;
  globalThis.__TOOLGATE_TEST_POSTGRES_DIR = undefined;
  await destroyServer(dir);
}

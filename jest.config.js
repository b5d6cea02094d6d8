/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: "node",
  roots: ["<rootDir>/test"],
  testMatch: ["**/*.test.ts"],
  transform: { "^.+\\.ts$": ["ts-jest", {}] },
  testTimeout: 30000,
  // one throwaway PostgreSQL server per run: TOOLGATE_TEST_POSTGRES_URL, test/helpers/postgres.ts
  globalSetup: "<rootDir>/test/setup/postgres-global-setup.mjs",
  globalTeardown: "<rootDir>/test/setup/postgres-global-teardown.mjs",
};

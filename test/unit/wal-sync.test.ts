import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { WalSync } from "../../src/shared/wal-sync";
import { tempDir } from "../helpers/opa";

function walFile(): string {
  const path = join(tempDir("toolgate-walsync-"), "x.db-wal");
  writeFileSync(path, "frames");
  return path;
}

describe("WalSync (group fdatasync of a WAL file)", () => {
  test("callers arriving while an fdatasync runs share the next one", async () => {
    const w = new WalSync(walFile());
    const first = w.sync();
    const later = Array.from({ length: 20 }, () => w.sync());
    // every later caller gets the same queued sync: it begins after the running one
    expect(new Set(later).size).toBe(1);
    expect(later[0]).not.toBe(first);
    await Promise.all([first, ...later]);
    expect(w.syncs).toBe(2);
    // idle again: the next caller starts its own
    await w.sync();
    expect(w.syncs).toBe(3);
    w.close();
  });

  test("a WAL file replaced under it is reopened; a removed one fails the sync", async () => {
    const path = walFile();
    const w = new WalSync(path);
    await w.sync();
    rmSync(path);
    writeFileSync(path, "new frames");
    // the old descriptor's file is unlinked: synced again through the path
    await w.sync();
    expect(w.syncs).toBe(2);
    rmSync(path);
    await expect(w.sync()).rejects.toThrow(/ENOENT/);
    expect(w.syncs).toBe(2);
    w.close();
  });

  test("closed: queued and later syncs reject; a running one never claims a sync it did not make", async () => {
    const w = new WalSync(walFile());
    await w.sync(); // opened
    const running = w.sync();
    const queued = w.sync();
    w.close();
    const refused = expect(queued).rejects.toThrow(/closed/);
    // the running fdatasync had its descriptor: it completes, and only then is it closed
    await expect(running).resolves.toBeUndefined();
    expect(w.syncs).toBe(2);
    await refused;
    await expect(w.sync()).rejects.toThrow(/closed/);
    w.close(); // idempotent
  });
});

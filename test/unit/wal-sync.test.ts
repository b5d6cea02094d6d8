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

  test("a WAL file unlinked under it fails that sync and every later one (fail closed)", async () => {
    const path = walFile();
    const w = new WalSync(path);
    await w.sync();
    rmSync(path);
    writeFileSync(path, "someone else's file"); // not what SQLite writes to: never synced instead
    await expect(w.sync()).rejects.toThrow(/WAL file was removed/);
    await expect(w.sync()).rejects.toThrow(/WAL file was removed/);
    expect(w.syncs).toBe(1);
    w.close();
  });

  test("a WAL file missing at the first sync fails it", async () => {
    const path = walFile();
    rmSync(path);
    await expect(new WalSync(path).sync()).rejects.toThrow(/ENOENT/);
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

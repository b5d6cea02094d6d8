/**
 * Group commit for SQLite writes that must be durable before something is
 * answered, without the event loop waiting for the disk.
 *
 * A write committed on a `synchronous=NORMAL` connection in WAL mode is in
 * the WAL file (the OS's page cache), not yet on disk. `WalSync.sync()`
 * resolves once an `fdatasync` of that WAL file, begun after the call, has
 * completed: the commit is then as durable as a `synchronous=FULL` commit
 * (which is the same fsync of the WAL, done inside the commit, on the calling
 * thread). The fdatasync runs on libuv's thread pool; callers that arrive
 * while one is running share the next one, so a burst of N writes costs at
 * most two fdatasyncs and never blocks the event loop.
 *
 * The WAL file (`<db>-wal`) is opened on first use and kept open. SQLite
 * deletes it only when the last connection to the database closes, which the
 * owning store's open connections prevent; should it still be unlinked (an
 * operator, another tool), SQLite goes on writing to the unlinked file, which
 * no sync can make durable, and whatever is at the path now is not what
 * SQLite writes: from then on every sync rejects. A rejection means "not
 * known to be durable": callers fail closed.
 */
import { close, fdatasync, fstatSync, open, constants } from "node:fs";

export class WalSync {
  private fd: number | undefined;
  private running: Promise<void> | undefined;
  private queued: Promise<void> | undefined;
  private closed = false;
  /** Why no sync can succeed any more (the WAL file was unlinked under SQLite). */
  private broken: Error | undefined;
  /** fdatasyncs completed (for metrics and tests). */
  syncs = 0;

  /** `walPath`: the database's WAL file, `<db>-wal`. */
  constructor(readonly walPath: string) {}

  /** Resolves when everything written to the WAL before this call is on disk. */
  sync(): Promise<void> {
    if (this.closed) return Promise.reject(new Error(`${this.walPath}: closed`));
    if (this.broken !== undefined) return Promise.reject(this.broken);
    // a running fdatasync may have begun before the caller's write: wait for the next one
    if (this.queued !== undefined) return this.queued;
    if (this.running === undefined) return this.start();
    const next = this.running.then(
      () => this.afterRunning(),
      () => this.afterRunning(),
    );
    this.queued = next;
    return next;
  }

  /**
   * Queued and later syncs reject, as does a running one that had not yet
   * opened the file; the descriptor is closed once a running fdatasync has
   * finished (never under it: its number could be reused). Idempotent.
   */
  close(): void {
    this.closed = true;
    if (this.running === undefined) this.closeFd();
  }

  private closeFd(): void {
    const fd = this.fd;
    this.fd = undefined;
    if (fd !== undefined) close(fd, () => undefined);
  }

  private afterRunning(): Promise<void> {
    this.queued = undefined;
    return this.start();
  }

  private start(): Promise<void> {
    if (this.closed) return Promise.reject(new Error(`${this.walPath}: closed`));
    if (this.broken !== undefined) return Promise.reject(this.broken);
    const p = this.syncOnce();
    this.running = p;
    const clear = (): void => {
      if (this.running === p) this.running = undefined;
      if (this.closed && this.running === undefined) this.closeFd();
    };
    p.then(clear, clear);
    return p;
  }

  private async syncOnce(): Promise<void> {
    const fd = await this.descriptor();
    await new Promise<void>((resolve, reject) => fdatasync(fd, (e) => (e ? reject(e) : resolve())));
    // an inode lookup, no disk I/O: cheaper inline than another trip to the thread pool
    if (fstatSync(fd).nlink > 0) {
      this.syncs++;
      return;
    }
    this.broken ??= new Error(
      `${this.walPath}: the WAL file was removed while the database is open`,
    );
    throw this.broken;
  }

  private async descriptor(): Promise<number> {
    if (this.fd !== undefined) return this.fd;
    const fd = await new Promise<number>((resolve, reject) =>
      open(this.walPath, constants.O_RDONLY, (e, d) => (e ? reject(e) : resolve(d))),
    );
    if (this.closed) {
      close(fd, () => undefined);
      throw new Error(`${this.walPath}: closed`);
    }
    if (this.fd !== undefined) {
      close(fd, () => undefined); // another sync opened it meanwhile
      return this.fd;
    }
    this.fd = fd;
    return fd;
  }
}

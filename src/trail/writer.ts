/**
 * The trail's writer: a tamper-evident, append-only JSON Lines file set (the
 * line layout is in format.ts, the files' names in paths.ts).
 *
 * `append` is on the decision path: it serialises, hashes and buffers in
 * memory and never does I/O. A single writer (timer-driven, unref'd) writes
 * buffered lines in order with one write in flight at a time, rotates files
 * and fsyncs. Write errors are counted and reported through `onError`, never
 * thrown into `append`; records are kept and retried, never dropped. A file
 * this writer created and never got a line into is removed again, so a full
 * disk leaves no empty files behind; files are 0600 and the directory 0700.
 */
import {
  close as fsClose,
  fchmod,
  fchmodSync,
  fstat,
  fsync,
  ftruncate,
  open as fsOpen,
  openSync,
  unlink,
  write as fsWrite,
} from "node:fs";
import { basename, join } from "node:path";
import { toolgateError } from "../errors";
import { ensurePrivateDir, PRIVATE_FILE_MODE } from "../shared/paths";
import {
  canonicalJson,
  GENESIS_HASH,
  invalidRecord as invalid,
  lineBody,
  RECOVERED_KIND,
  sha256Hex,
} from "./format";
import { listTrailFiles, trailFileIndex, trailFileName } from "./paths";
import { scanTail, type ChainFacts } from "./reader";

/** Pending lines above this are kept (never dropped) but reported once per episode. */
export const MAX_PENDING_LINES = 100_000;

export const TRAIL_DEFAULTS = {
  maxFileBytes: 64 * 1024 * 1024,
  flushIntervalMs: 50,
  fsyncIntervalMs: 1000,
} as const;

export interface TrailOptions {
  /** Directory of the trail; created if missing. One writer per directory. */
  dir: string;
  /** Rotate when the current file would exceed this (default 64 MiB). */
  maxFileBytes?: number;
  /** Buffered lines are written at least this often (default 50 ms). */
  flushIntervalMs?: number;
  /** fsync at least this often (default 1000 ms); also on rotation and close. */
  fsyncIntervalMs?: number;
  /** Write errors: counted, reported here, never thrown into the decision path. */
  onError?: (e: Error) => void;
}

export interface TrailStats {
  /** Records appended by this instance. */
  appended: number;
  /** Of those, lines handed to the OS and not known to be lost. */
  written: number;
  /** Failed write / open / fsync attempts (each is reported through onError). */
  writeErrors: number;
  /** Lines buffered in memory, not yet written. */
  pending: number;
  /** Their size (characters of JSON text: bytes for ASCII), what audit.max_backlog_bytes counts. */
  pendingBytes: number;
  /** Hash of the newest appended record: anchor it elsewhere (spans, logs). */
  lastHash: string;
  /** The file being written (or to be written next). */
  file: string;
}

/** Largest batch handed to one write call. */
const BATCH_BYTES = 1024 * 1024;
const MAX_RETRY_DELAY_MS = 1000;

function p<T>(fn: (cb: (err: NodeJS.ErrnoException | null, v: T) => void) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => fn((err, v) => (err ? reject(err) : resolve(v))));
}

function positiveInt(name: string, v: number | undefined, dflt: number): number {
  if (v === undefined) return dflt;
  if (!Number.isSafeInteger(v) || v <= 0)
    throw toolgateError("config_invalid", `audit trail: ${name} must be a positive integer`);
  return v;
}

interface Waiter {
  target: number;
  resolve: () => void;
  reject: (e: Error) => void;
}

export class AuditTrail {
  private readonly dir: string;
  private readonly maxFileBytes: number;
  private readonly flushIntervalMs: number;
  private readonly fsyncIntervalMs: number;
  private readonly onError: ((e: Error) => void) | undefined;

  /** seq and hash of the newest appended record (the chain head in memory). */
  private seq: number;
  private head: string;
  /** seq of the newest line handed to the OS. */
  private writtenSeq: number;
  private pending: string[] = [];
  /** The characters of `pending`'s lines. */
  private pendingBytes = 0;
  /** Lines written to the current file since its last successful fsync. */
  private unconfirmed: string[] = [];

  private fd: number | undefined;
  private fileIndex: number;
  private fileBytes: number;
  /** Whether this writer created the current file (and may remove it while it holds nothing). */
  private created: boolean;
  private dirty = false;
  private syncWanted = false;
  private lastSyncAt = Date.now();

  private running: Promise<void> | undefined;
  private waiters: Waiter[] = [];
  private flushTimer: NodeJS.Timeout | undefined;
  private syncTimer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private retryDelay = 0;
  private lastRunFailed = false;
  private overflowing = false;
  private closed = false;
  private closing: Promise<void> | undefined;

  private appended = 0;
  private written = 0;
  private writeErrors = 0;

  private constructor(
    opts: TrailOptions,
    state: {
      seq: number;
      head: string;
      fd: number;
      fileIndex: number;
      fileBytes: number;
      created: boolean;
    },
  ) {
    this.dir = opts.dir;
    this.maxFileBytes = positiveInt("maxFileBytes", opts.maxFileBytes, TRAIL_DEFAULTS.maxFileBytes);
    this.flushIntervalMs = positiveInt(
      "flushIntervalMs",
      opts.flushIntervalMs,
      TRAIL_DEFAULTS.flushIntervalMs,
    );
    this.fsyncIntervalMs = positiveInt(
      "fsyncIntervalMs",
      opts.fsyncIntervalMs,
      TRAIL_DEFAULTS.fsyncIntervalMs,
    );
    this.onError = opts.onError;
    this.seq = state.seq;
    this.head = state.head;
    this.writtenSeq = state.seq;
    this.fd = state.fd;
    this.fileIndex = state.fileIndex;
    this.fileBytes = state.fileBytes;
    this.created = state.created;
  }

  /**
   * Opens (creating if needed) the trail in `opts.dir` and resumes its chain
   * from the last good record on disk. If the newest file ends in a torn or
   * corrupt tail, writing continues in a new file whose first record is a
   * `trail.recovered` marker chained to the last good record. Synchronous:
   * meant for start-up. Throws `audit_trail_unreadable` if the directory or
   * its files cannot be read or created.
   */
  static open(opts: TrailOptions): AuditTrail {
    // validate options before touching the disk
    positiveInt("maxFileBytes", opts.maxFileBytes, 1);
    positiveInt("flushIntervalMs", opts.flushIntervalMs, 1);
    positiveInt("fsyncIntervalMs", opts.fsyncIntervalMs, 1);
    let files: string[];
    try {
      ensurePrivateDir(opts.dir);
      files = listTrailFiles(opts.dir);
    } catch (e) {
      throw toolgateError(
        "audit_trail_unreadable",
        `audit trail directory ${opts.dir}: ${(e as Error).message}`,
      );
    }
    let last: ChainFacts | undefined;
    const damaged: { file: string; discardedBytes: number }[] = [];
    let newestSize = 0;
    try {
      for (let i = files.length - 1; i >= 0 && last === undefined; i--) {
        const file = files[i] as string;
        const scan = scanTail(file);
        if (i === files.length - 1) newestSize = scan.size;
        if (scan.discardedBytes > 0)
          damaged.push({ file: basename(file), discardedBytes: scan.discardedBytes });
        last = scan.last;
      }
    } catch (e) {
      throw toolgateError("audit_trail_unreadable", `audit trail: ${(e as Error).message}`);
    }
    const newest = files[files.length - 1];
    const newestIndex = newest === undefined ? 0 : (trailFileIndex(basename(newest)) ?? 0);
    const resume = newest !== undefined && damaged.length === 0;
    const fileIndex = resume ? newestIndex : newestIndex + 1;
    const path = join(opts.dir, trailFileName(fileIndex));
    let fd: number;
    try {
      fd = openSync(path, resume ? "a" : "wx", PRIVATE_FILE_MODE);
      fchmodSync(fd, PRIVATE_FILE_MODE); // whatever the umask; also a file an older version left 0644
    } catch (e) {
      throw toolgateError(
        "audit_trail_unreadable",
        `audit trail file ${path}: ${(e as Error).message}`,
      );
    }
    const trail = new AuditTrail(opts, {
      seq: last?.seq ?? 0,
      head: last?.hash ?? GENESIS_HASH,
      fd,
      fileIndex,
      fileBytes: resume ? newestSize : 0,
      created: !resume,
    });
    for (const d of damaged) {
      trail.append(RECOVERED_KIND, {
        file: d.file,
        discarded_bytes: d.discardedBytes,
        last_good_seq: last?.seq ?? 0,
        message:
          "a torn or corrupt tail was skipped; the chain continues from the last good record",
      });
    }
    return trail;
  }

  /**
   * Appends a record in memory and returns its seq and hash. No I/O: the
   * line is written by the background writer. Throws only for caller errors
   * (`audit_record_invalid`: not plain JSON; `audit_trail_closed`).
   */
  append(kind: string, record: Record<string, unknown>): { seq: number; hash: string } {
    if (this.closed) throw toolgateError("audit_trail_closed");
    if (typeof kind !== "string" || kind === "")
      throw invalid("audit kind must be a non-empty string");
    if (record === null || typeof record !== "object" || Array.isArray(record))
      throw invalid("an audit record must be a JSON object");
    return this.appendJson(kind, canonicalJson(record));
  }

  /**
   * Like append, for a record already serialised as a JSON object text (the
   * auditor serialises each record once for the trail and the log line). The
   * text is written as is and hashed as written.
   */
  appendJson(kind: string, recJson: string): { seq: number; hash: string } {
    if (this.closed) throw toolgateError("audit_trail_closed");
    if (typeof kind !== "string" || kind === "")
      throw invalid("audit kind must be a non-empty string");
    if (recJson.charCodeAt(0) !== 0x7b || recJson.includes("\n")) {
      throw invalid("an audit record must be one JSON object on one line");
    }
    const seq = this.seq + 1;
    const time = new Date().toISOString();
    const kindJson = JSON.stringify(kind);
    const prev = this.head;
    const body = lineBody(seq, time, kindJson, prev, recJson);
    const hash = sha256Hex(body);
    const line = `${body},"hash":"${hash}"}\n`;
    this.pending.push(line);
    this.pendingBytes += line.length;
    this.seq = seq;
    this.head = hash;
    this.appended++;
    if (this.pending.length > MAX_PENDING_LINES && !this.overflowing) {
      this.overflowing = true;
      this.report(
        toolgateError(
          "audit_backlog_overflow",
          `audit trail: more than ${MAX_PENDING_LINES} records wait to be written; they are kept in memory`,
        ),
      );
    }
    this.schedule();
    return { seq, hash };
  }

  /** Writes everything appended before the call; rejects if a write fails. */
  flush(): Promise<void> {
    const target = this.seq;
    if (this.writtenSeq >= target && this.pending.length === 0) return Promise.resolve();
    const done = new Promise<void>((resolve, reject) => {
      this.waiters.push({ target, resolve, reject });
    });
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    void this.pump();
    return done;
  }

  /**
   * Flushes, fsyncs and closes; further appends throw. Safe to call again
   * (returns the same promise). Rejects with `audit_write_failed` if records
   * could not be written.
   */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  /** `stats().pendingBytes`, without building the rest (read once per decision). */
  backlogBytes(): number {
    return this.pendingBytes;
  }

  stats(): TrailStats {
    return {
      appended: this.appended,
      written: this.written,
      writeErrors: this.writeErrors,
      pending: this.pending.length,
      pendingBytes: this.pendingBytes,
      lastHash: this.head,
      file: join(this.dir, trailFileName(this.fileIndex)),
    };
  }

  // -- internals ----------------------------------------------------------------

  private report(e: Error): void {
    try {
      this.onError?.(e);
    } catch {
      // a faulty error handler must not break the writer or the caller
    }
  }

  private schedule(): void {
    if (this.flushTimer || this.running || this.retryTimer || this.closing) return;
    this.flushTimer = setTimeout(() => {
      this.flushTimer = undefined;
      void this.pump();
    }, this.flushIntervalMs);
    this.flushTimer.unref();
  }

  private pump(): Promise<void> {
    if (!this.running) {
      if (this.retryTimer) clearTimeout(this.retryTimer);
      this.retryTimer = undefined;
      this.running = this.run().finally(() => {
        this.running = undefined;
        if (this.waiters.length > 0) void this.pump();
        else if (this.pending.length > 0) this.schedule();
        else if (this.dirty && !this.syncTimer && !this.closing) {
          const wait = Math.max(0, this.lastSyncAt + this.fsyncIntervalMs - Date.now());
          this.syncTimer = setTimeout(() => {
            this.syncTimer = undefined;
            this.syncWanted = true;
            void this.pump();
          }, wait);
          this.syncTimer.unref();
        }
      });
    }
    return this.running;
  }

  /** The writer loop: one operation in flight at a time. Never rejects. */
  private async run(): Promise<void> {
    this.lastRunFailed = false;
    try {
      while (this.pending.length > 0 || (this.dirty && this.syncWanted)) {
        if (this.pending.length > 0) await this.writeBatch();
        if (this.dirty && (this.syncWanted || Date.now() - this.lastSyncAt >= this.fsyncIntervalMs))
          await this.sync();
      }
      this.retryDelay = 0;
    } catch (e) {
      this.fail(e);
    }
  }

  private async writeBatch(): Promise<void> {
    if (this.fd === undefined) await this.openNext();
    const fd = this.fd as number;
    let count = 0;
    let bytes = 0;
    let rotate = false;
    for (; count < this.pending.length; count++) {
      const b = Buffer.byteLength(this.pending[count] as string);
      if (this.fileBytes + bytes > 0 && this.fileBytes + bytes + b > this.maxFileBytes) {
        rotate = true;
        break;
      }
      bytes += b;
      if (bytes >= BATCH_BYTES) {
        count++;
        break;
      }
    }
    if (count > 0) {
      const lines = this.pending.slice(0, count);
      const buf = Buffer.from(lines.join(""), "utf8");
      let off = 0;
      try {
        while (off < buf.length) {
          off += await p<number>((cb) => fsWrite(fd, buf, off, buf.length - off, null, cb));
        }
      } catch (e) {
        // the file may now end in a partial line: cut it back if we can, and
        // continue in a fresh file either way (the verifier accepts a torn
        // tail that a later file continues past).
        await this.abandonFile(this.fileBytes);
        throw e;
      }
      this.pending.splice(0, count);
      for (const line of lines) {
        this.unconfirmed.push(line);
        this.pendingBytes -= line.length;
      }
      this.fileBytes += bytes;
      this.writtenSeq += count;
      this.written += count;
      this.dirty = true;
      if (this.overflowing && this.pending.length <= MAX_PENDING_LINES) this.overflowing = false;
      this.settleWaiters();
    }
    if (rotate) {
      await this.sync();
      const old = this.fd;
      this.fd = undefined;
      if (old !== undefined)
        await p<void>((cb) => fsClose(old, (err) => cb(err ?? null, undefined)));
    }
  }

  private async openNext(): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      const index = this.fileIndex + 1;
      const path = join(this.dir, trailFileName(index));
      try {
        this.fd = await p<number>((cb) => fsOpen(path, "wx", PRIVATE_FILE_MODE, cb));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === "EEXIST" && attempt < 1000) {
          this.fileIndex = index; // never write into a file this writer did not create or resume
          continue;
        }
        throw e;
      }
      this.fileIndex = index;
      this.fileBytes = 0;
      this.created = true;
      const fd = this.fd;
      await p<void>((cb) => fchmod(fd, PRIVATE_FILE_MODE, (err) => cb(err ?? null, undefined)));
      await this.syncDir();
      return;
    }
  }

  /** Makes a new file's directory entry durable (best effort where unsupported). */
  private async syncDir(): Promise<void> {
    let dfd: number | undefined;
    try {
      dfd = await p<number>((cb) => fsOpen(this.dir, "r", cb));
      const d = dfd;
      await p<void>((cb) => fsync(d, (err) => cb(err ?? null, undefined)));
    } catch {
      // some platforms cannot fsync a directory; the file's own fsync still applies
    } finally {
      if (dfd !== undefined) {
        const d = dfd;
        await p<void>((cb) => fsClose(d, () => cb(null, undefined)));
      }
    }
  }

  /**
   * fsyncs the current file and confirms it is still linked. If it was
   * removed while open (its lines went nowhere durable), those lines are
   * re-queued for a new file and the error is reported.
   */
  private async sync(): Promise<void> {
    const fd = this.fd;
    if (fd === undefined || !this.dirty) {
      this.syncWanted = false;
      return;
    }
    await p<void>((cb) => fsync(fd, (err) => cb(err ?? null, undefined)));
    const st = await p<{ nlink: number }>((cb) => fstat(fd, cb));
    if (st.nlink === 0) {
      const lost = this.unconfirmed.length;
      for (const line of this.unconfirmed) this.pendingBytes += line.length;
      this.pending = this.unconfirmed.concat(this.pending);
      this.writtenSeq -= lost;
      this.written -= lost;
      this.unconfirmed = [];
      this.dirty = false;
      this.fd = undefined;
      await p<void>((cb) => fsClose(fd, () => cb(null, undefined)));
      throw new Error(
        `${trailFileName(this.fileIndex)} was removed while open; ${lost} records re-queued for a new file`,
      );
    }
    this.unconfirmed = [];
    this.dirty = false;
    this.syncWanted = false;
    this.lastSyncAt = Date.now();
  }

  private async abandonFile(confirmedBytes: number): Promise<void> {
    const fd = this.fd;
    this.fd = undefined;
    if (fd === undefined) return;
    await p<void>((cb) => ftruncate(fd, confirmedBytes, () => cb(null, undefined)));
    if (this.dirty) await p<void>((cb) => fsync(fd, () => cb(null, undefined)));
    this.unconfirmed = [];
    this.dirty = false;
    await p<void>((cb) => fsClose(fd, () => cb(null, undefined)));
    if (confirmedBytes === 0 && this.created) {
      // A file this writer created and never got a line into (a full disk
      // fails every write): remove it, and let the retry create it again
      // under the same name, instead of leaving one empty file per retry.
      const path = join(this.dir, trailFileName(this.fileIndex));
      const removed = await p<boolean>((cb) => unlink(path, (err) => cb(null, !err)));
      if (removed) {
        this.fileIndex -= 1;
        await this.syncDir();
      }
    }
  }

  private settleWaiters(): void {
    if (this.waiters.length === 0) return;
    const still: Waiter[] = [];
    for (const w of this.waiters) {
      if (w.target <= this.writtenSeq) w.resolve();
      else still.push(w);
    }
    this.waiters = still;
  }

  private fail(e: unknown): void {
    this.lastRunFailed = true;
    this.writeErrors++;
    const err = toolgateError(
      "audit_write_failed",
      `audit trail write failed (${this.pending.length} records kept, will retry): ${
        e instanceof Error ? e.message : String(e)
      }`,
    );
    this.report(err);
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w.reject(err);
    if (this.closing) return;
    this.retryDelay = Math.min(
      MAX_RETRY_DELAY_MS,
      Math.max(this.flushIntervalMs, this.retryDelay * 2),
    );
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      void this.pump();
    }, this.retryDelay);
    this.retryTimer.unref();
  }

  private async doClose(): Promise<void> {
    this.closed = true;
    for (const t of [this.flushTimer, this.syncTimer, this.retryTimer]) if (t) clearTimeout(t);
    this.flushTimer = this.syncTimer = this.retryTimer = undefined;
    if (this.running) await this.running;
    this.syncWanted = true;
    await this.pump();
    const failed = this.lastRunFailed;
    const lost = this.pending.length;
    const fd = this.fd;
    this.fd = undefined;
    if (fd !== undefined) await p<void>((cb) => fsClose(fd, () => cb(null, undefined)));
    if (failed || lost > 0)
      throw toolgateError(
        "audit_write_failed",
        `audit trail closed with ${lost} records unwritten (see the reported write errors)`,
      );
  }
}

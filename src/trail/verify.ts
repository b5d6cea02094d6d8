/**
 * Verifying a trail's hash chain, on top of the reader: every complete line
 * must check out against its own hash, and seq and prev must continue from
 * the record before it, across files.
 */
import { basename } from "node:path";
import { GENESIS_HASH } from "./format";
import { expandTrailPaths } from "./paths";
import { readTrail } from "./reader";

export type BreakReason =
  "hash_mismatch" | "prev_mismatch" | "seq_gap" | "malformed" | "truncated" | "chain_start";

export interface VerifyResult {
  ok: boolean;
  /** Records verified (up to the first break). */
  records: number;
  files: number;
  firstBreak?: { file: string; line: number; seq?: number; reason: BreakReason; message: string };
  /** Hash of the last record verified. */
  lastHash?: string;
  /**
   * Torn (unterminated) last lines that a later file skipped over while
   * continuing the chain unbroken: the signature of a crash mid-write that
   * `AuditTrail.open` recovered from. Informational; not a break.
   */
  recovered?: { file: string; line: number; message: string }[];
}

export interface VerifyOptions {
  /** Accept a first record whose seq is not 1 / prev is not genesis (old files deleted). */
  allowPartialStart?: boolean;
}

/**
 * Verifies a trail: `files` in order (a directory expands to its
 * trail-*.jsonl files by number; one without any is `audit_trail_unreadable`).
 * Reports the first break. A torn last line (no terminating newline) is
 * accepted only when a later file continues the chain from the record before
 * it (crash recovery); at the end of the trail it is a `truncated` break.
 * Records deleted cleanly from the end of the newest file cannot be detected
 * here: compare `lastHash` with an externally anchored hash.
 */
export function verifyTrail(files: string[], opts: VerifyOptions = {}): VerifyResult {
  const paths = expandTrailPaths(files, { requireFiles: true });
  let records = 0;
  let lastHash: string | undefined;
  let expectSeq: number | undefined;
  let torn: { file: string; line: number } | undefined;
  const recovered: { file: string; line: number; message: string }[] = [];

  const result = (brk?: VerifyResult["firstBreak"]): VerifyResult => {
    const r: VerifyResult = { ok: brk === undefined, records, files: paths.length };
    if (brk) r.firstBreak = brk;
    if (lastHash !== undefined) r.lastHash = lastHash;
    if (recovered.length > 0) r.recovered = recovered;
    return r;
  };

  for (const l of readTrail(paths)) {
    const { file, line } = l;
    if (!l.complete) {
      // a file's last line; whether it is a break depends on what follows
      torn = { file, line };
      continue;
    }
    const checked = l.check();
    if (!checked.ok) {
      const brk: NonNullable<VerifyResult["firstBreak"]> = {
        file,
        line,
        reason: checked.reason,
        message: checked.message,
      };
      if (checked.seq !== undefined) brk.seq = checked.seq;
      return result(brk);
    }
    const { seq, prev, hash } = checked.rec;
    const at = (reason: BreakReason, message: string) =>
      result({ file, line, seq, reason, message });
    if (expectSeq === undefined) {
      if (!opts.allowPartialStart && (seq !== 1 || prev !== GENESIS_HASH))
        return at(
          "chain_start",
          `the trail starts at seq ${seq}${prev === GENESIS_HASH ? "" : " with a non-genesis prev"}, not at seq 1 with the genesis prev: earlier records or files are missing (use allowPartialStart for a retained suffix)`,
        );
    } else {
      if (seq !== expectSeq)
        return at(
          "seq_gap",
          `expected seq ${expectSeq}, found ${seq}: records are missing or out of order`,
        );
      if (prev !== lastHash)
        return at(
          "prev_mismatch",
          `prev does not match the hash of record ${expectSeq - 1}: a record was removed, replaced or reordered`,
        );
    }
    if (torn) {
      recovered.push({
        ...torn,
        message: `torn last line skipped; the chain continues unbroken at ${basename(file)}:${line} (seq ${seq})`,
      });
      torn = undefined;
    }
    records++;
    lastHash = hash;
    expectSeq = seq + 1;
  }
  if (torn)
    return result({
      ...torn,
      ...(expectSeq === undefined ? {} : { seq: expectSeq }),
      reason: "truncated",
      message:
        "the last line is incomplete (no terminating newline): a torn write or a truncated file",
    });
  return result();
}

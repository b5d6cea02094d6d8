import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import ts from "typescript";

const root = join(__dirname, "..", "..");

/**
 * Transpiles `entry` (a path under the repository, e.g. "src/trail/writer.ts")
 * and the src/ modules it imports or requires, transitively, into `out` as
 * CommonJS; returns the path of the entry's .js. For tests that run the real
 * code in a child process (a resource limit, a clean module registry).
 */
export function transpileSrc(entry: string, out: string): string {
  const todo = [join(root, entry)];
  const done = new Set<string>();
  while (todo.length > 0) {
    const file = todo.pop() as string;
    if (done.has(file)) continue;
    done.add(file);
    const text = readFileSync(file, "utf8");
    for (const m of text.matchAll(/(?:from |require\()"(\.{1,2}\/[^"]+)"/g)) {
      const base = resolve(dirname(file), m[1] as string);
      todo.push(existsSync(`${base}.ts`) ? `${base}.ts` : join(base, "index.ts"));
    }
    const js = ts.transpileModule(text, {
      compilerOptions: {
        module: ts.ModuleKind.CommonJS,
        target: ts.ScriptTarget.ES2022,
        esModuleInterop: true,
      },
    }).outputText;
    const target = join(out, relative(root, file).replace(/\.ts$/, ".js"));
    mkdirSync(dirname(target), { recursive: true });
    writeFileSync(target, js);
  }
  return join(out, entry.replace(/\.ts$/, ".js"));
}

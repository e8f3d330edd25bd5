/**
 * `gqa2mla check <converted-dir> [--engine vllm|sglang|transformers|all] [--json]`
 */
import type { Command } from 'commander';
import { checkDirectory, formatCheck } from '../check.js';
import { usageError } from '../errors.js';
import { ENGINES, type EngineName } from '../interop/engine-semantics.js';

/** Registers the command. */
export function register(program: Command): void {
  program
    .command('check')
    .description('whether stock vLLM, SGLang and transformers load a converted directory and compute what gqa2mla computes, and which MLA backends take its budget')
    .argument('<converted-dir>', 'a DeepSeek-V3 directory (gqa2mla convert output, or another MLA checkpoint)')
    .option('--engine <vllm|sglang|transformers|all>', 'engine to check', 'all')
    .option('--json', 'print the result as JSON')
    .action(async (dir: string, o: { engine: string; json?: boolean }) => {
      if (o.engine !== 'all' && !(ENGINES as readonly string[]).includes(o.engine))
        throw usageError('ERR_BAD_OPTION', `--engine must be one of ${ENGINES.join(', ')} or all (got '${o.engine}')`);
      const engines = o.engine === 'all' ? ENGINES : [o.engine as EngineName];
      const r = await checkDirectory(dir, engines);
      process.stdout.write(o.json ? `${JSON.stringify(r, null, 2)}\n` : formatCheck(r));
    });
}

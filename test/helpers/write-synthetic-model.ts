/**
 * Writes a synthetic checkpoint from the command line (a separate process: generating the
 * random weights is many times faster under tsx than inside jest's module VM).
 * Usage: tsx test/helpers/write-synthetic-model.ts <dir> '<SyntheticModelOptions JSON>'
 */
import { type SyntheticModelOptions, writeSyntheticModel } from './synthetic-model.js';

const [dir, json] = process.argv.slice(2);
const bytes = await writeSyntheticModel(dir, JSON.parse(json) as SyntheticModelOptions);
process.stdout.write(`${bytes}\n`);

/**
 * Writes openapi/openapi.json from the routes' schemas (`npm run openapi`). A test regenerates the
 * document and fails when it differs from the committed file.
 */
import { writeFile } from 'node:fs/promises'
import { generateOpenApi } from './openapi-document.js'

const target = new URL('../openapi/openapi.json', import.meta.url)
await writeFile(target, await generateOpenApi())
process.stdout.write(`wrote ${target.pathname}\n`)

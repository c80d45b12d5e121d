// Print the resource graph that railway.ts describes, as JSON on stdout:
//   node .railway/graph.mjs [environment]
// The DSL functions of the pinned `railway` package are plain functions that
// return resource nodes; tests/test_railway_iac.py checks this output against
// the Procfile and scripts/. tsx (a dependency of `railway`) loads the .ts file.
import { createRailwayContext, project } from "railway/iac";
import { tsImport } from "tsx/esm/api";

const program = (await tsImport("./railway.ts", import.meta.url)).default;
const ctx = createRailwayContext({ command: "plan", environment: process.argv[2] ?? "production" });
process.stdout.write(JSON.stringify(await program(ctx, project)));

import sys, time, shutil, json, cProfile, pstats
from ancestree.index.atlas import Atlas
import ancestree.graph.recover, numba  # warm imports
items = [tuple(x) for x in json.load(open("last10.json"))]
for f in ["base.db-wal","base.db-shm"]:
    pass
shutil.copy("base.db", "add.db"); shutil.copy("base.db", "reb.db")
# warm numba kernels
with Atlas("reb.db") as a:
    t=time.perf_counter(); a.rebuild(); print("rebuild warm-up", time.perf_counter()-t)
shutil.copy("base.db", "reb.db")
with Atlas("reb.db") as a:
    t=time.perf_counter(); a.rebuild(); print("rebuild", time.perf_counter()-t)
with Atlas("add.db") as a:
    pr = cProfile.Profile(); t=time.perf_counter(); pr.enable(); r=a.add(items); pr.disable(); print("add10", time.perf_counter()-t, r.summary())
pstats.Stats(pr).sort_stats("cumulative").print_stats(45)

"""Exploratory second opinion for docs/LOG.md (2026-12-02), not lmforge's forecast of record: Kaplan et
al.'s (2020) L(N, D) = [(N_c/N)^(a_N/a_D) + D_c/D]^a_D fitted to the sweep's points (Huber least squares on
log loss, delta 1e-3, as approach 3), and its forecasts at the benchmark's three targets.

    python docs/scaling/2026-12-02/kaplan_form.py   (from the repository root)
"""
import numpy as np, csv
from scipy.optimize import least_squares
rows=list(csv.DictReader(open('docs/scaling/2026-12-02/points.csv')))
N=np.array([float(r['params']) for r in rows]); D=np.array([float(r['tokens']) for r in rows]); L=np.array([float(r['loss']) for r in rows])
T=[(491520,5.12e6,'wider-10x'),(245760,10.24e6,'longer-10x'),(491520,15.36e6,'wider-30x')]
def kap(p,n,d,withE):
    lnc,ldc,aN,aD=p[:4]; E=np.exp(p[4]) if withE else 0
    return E+np.exp(aD*np.logaddexp((aN/aD)*(lnc-np.log(n)), ldc-np.log(d)))
for withE in (False,True):
    best=None
    for lnc in (8,10,12,14):
      for ldc in (10,12,14,16):
        for aN in (0.1,0.3,0.6):
          for aD in (0.1,0.3,0.6):
            x0=[lnc,ldc,aN,aD]+([0.5] if withE else [])
            try:
              r=least_squares(lambda p: np.log(kap(p,N,D,withE))-np.log(L), x0, loss='huber', f_scale=1e-3, max_nfev=3000)
            except Exception: continue
            if best is None or r.cost<best.cost: best=r
    p=best.x; res=np.log(kap(p,N,D,withE))-np.log(L)
    print('Kaplan'+(' + E' if withE else ''), 'params', np.round(p,3), 'rms %.2f%%'%(100*np.sqrt(np.mean(res**2))),
          ' '.join(f"{t[2]}={kap(p,np.array([t[0]]),np.array([t[1]]),withE)[0]:.3f}" for t in T))

"""One self-contained HTML file: an interactive picture of the Model Graph (pan, zoom, click for details, find by name).

No CDN and no external file: the data is embedded as JSON and drawn as SVG by a small inline script.
"""

from __future__ import annotations

import html
import json

from ancestree.fingerprint.types import short_name
from ancestree.graph.model_graph import ModelGraph
from ancestree.present.layout import layered_layout, shaped_row_width

COLORS = {"finetune": "#3b6fb6", "adapter": "#8e44ad", "quantized": "#16a085", "pruned": "#d35400",
          "merge": "#c0392b", "duplicate": "#7f8c8d", "unknown": "#555555"}

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body{margin:0;font:14px system-ui,sans-serif;display:flex;height:100vh;color:#222}
#view{flex:1;cursor:grab;background:#fafafa}#view:active{cursor:grabbing}
#side{width:320px;border-left:1px solid #ddd;padding:12px;overflow:auto;background:#fff}
.node rect{fill:#fff;stroke:#444;rx:6}.node.sel rect{stroke:#e67e22;stroke-width:3}
.node text{font-size:12px;pointer-events:none}.edge{fill:none;stroke-width:2}
.legend span{display:inline-block;margin:2px 6px 2px 0}.k{font-weight:600}
table{border-collapse:collapse}td{padding:2px 6px;border-bottom:1px solid #eee;vertical-align:top}
</style></head><body>
<svg id="view"><defs>__MARKERS__</defs><g id="world"></g></svg>
<div id="side"><h3>__TITLE__</h3><div id="summary"></div><div class="legend" id="legend"></div>
<p>Drag to pan, wheel to zoom, click a model for details.</p>
<input id="find" type="search" placeholder="find a model by name" autocomplete="off" style="width:100%;box-sizing:border-box">
<div id="found"></div><div id="details"></div></div>
<script id="graph-data" type="application/json">__DATA__</script>
<script>
(function(){
const data=JSON.parse(document.getElementById('graph-data').textContent);
const colors=__COLORS__;const svg=document.getElementById('view');const world=document.getElementById('world');
const NS='http://www.w3.org/2000/svg';const W=150,H=40,SX=180,SY=110;
let tx=40,ty=40,k=1;const byId={},drawn={};data.models.forEach(m=>byId[m.id]=m);
function el(tag,attrs,parent){const e=document.createElementNS(NS,tag);for(const a in attrs)e.setAttribute(a,attrs[a]);parent.appendChild(e);return e;}
function px(m){return [m.x*SX,-m.y*SY];}
data.edges.forEach(e=>{const a=px(byId[e.parent]),b=px(byId[e.child]);
 const p=el('path',{d:`M${a[0]},${a[1]+H/2} C${a[0]},${(a[1]+b[1])/2} ${b[0]},${(a[1]+b[1])/2} ${b[0]},${b[1]-H/2}`,
 class:'edge',stroke:colors[e.relation]||'#555','stroke-dasharray':e.relation==='finetune'||e.relation==='merge'?'':'6 4',
 'marker-end':e.relation==='duplicate'?'':'url(#arrow-'+e.relation+')'},world);
 const t=el('title',{},p);t.textContent=`${e.parent} → ${e.child}: ${e.relation} (${e.confidence.toFixed(2)})`;});
data.models.forEach(m=>{const [x,y]=px(m);const g=el('g',{class:'node','data-id':m.id,transform:`translate(${x-W/2},${y-H/2})`},world);drawn[m.id]=g;
 el('rect',{width:W,height:H},g);const t=el('text',{x:8,y:17},g);t.textContent=m.label;
 const s=el('text',{x:8,y:32,fill:'#666'},g);s.textContent=`${m.format} · tree ${m.tree}`;
 g.addEventListener('click',ev=>{ev.stopPropagation();select(m,g);});});
function select(m,g){document.querySelectorAll('.node.sel').forEach(n=>n.classList.remove('sel'));g.classList.add('sel');
 const parents=data.edges.filter(e=>e.child===m.id),kids=data.edges.filter(e=>e.parent===m.id);
 const row=(a,b)=>`<tr><td class="k">${a}</td><td>${b}</td></tr>`;const esc=s=>String(s).replace(/[&<>"]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));
 document.getElementById('details').innerHTML=`<h4>${esc(m.id)}</h4><table>`+row('format',esc(m.format))+row('parameters',m.parameters.toLocaleString())+row('tree',m.tree)+
 (m.declared_base_model?row('declared base',esc(m.declared_base_model)):'')+
 row('parents',parents.map(e=>`${esc(e.parent)} (${e.relation}, ${e.confidence.toFixed(2)})`).join('<br>')||'none (root)')+
 row('children',kids.map(e=>`${esc(e.child)} (${e.relation}, ${e.confidence.toFixed(2)})`).join('<br>')||'none')+'</table>';}
function apply(){world.setAttribute('transform',`translate(${tx},${ty}) scale(${k})`);}
function focus(m){const [x,y]=px(m),r=svg.getBoundingClientRect();k=Math.max(k,1);tx=r.width/2-x*k;ty=r.height/2-y*k;apply();select(m,drawn[m.id]);}
const find=document.getElementById('find'),found=document.getElementById('found');
find.addEventListener('input',()=>{const q=find.value.trim().toLowerCase();found.replaceChildren();if(!q)return;
 const hits=data.models.filter(m=>m.id.toLowerCase().includes(q));
 hits.slice(0,20).forEach(m=>{const a=document.createElement('a');a.href='#';a.className='hit';a.textContent=m.id;a.style.display='block';
  a.addEventListener('click',ev=>{ev.preventDefault();focus(m);});found.appendChild(a);});
 if(hits.length>20)found.append(`… and ${hits.length-20} more`);if(!hits.length)found.textContent='no model matches';});
find.addEventListener('keydown',ev=>{const first=found.querySelector('a.hit');if(ev.key==='Enter'&&first)first.click();});
let drag=null;svg.addEventListener('mousedown',e=>{drag=[e.clientX-tx,e.clientY-ty];});
window.addEventListener('mousemove',e=>{if(drag){tx=e.clientX-drag[0];ty=e.clientY-drag[1];apply();}});
window.addEventListener('mouseup',()=>drag=null);
svg.addEventListener('wheel',e=>{e.preventDefault();const f=Math.exp(-e.deltaY*0.0015);const r=svg.getBoundingClientRect();
 const mx=e.clientX-r.left,my=e.clientY-r.top;tx=mx-(mx-tx)*f;ty=my-(my-ty)*f;k*=f;apply();},{passive:false});
const xs=data.models.map(m=>m.x*SX),ys=data.models.map(m=>-m.y*SY);const r=svg.getBoundingClientRect();
if(xs.length){const w=Math.max(...xs)-Math.min(...xs)+W+40,h=Math.max(...ys)-Math.min(...ys)+H+40;
 k=Math.min(1.5,Math.min(r.width/w,r.height/h)||1);tx=-Math.min(...xs)*k+W/2*k+20;ty=-Math.min(...ys)*k+H/2*k+20;}
apply();
document.getElementById('summary').textContent=`${data.models.length} models, ${data.edges.length} edges, ${new Set(data.models.map(m=>m.tree)).size} trees`+(data.notes&&data.notes.length?`, ${data.notes.length} note(s): conflicts with declared lineage or damaged weights`:'');
document.getElementById('legend').innerHTML=Object.keys(colors).map(c=>`<span style="color:${colors[c]}">■ ${c}</span>`).join('');
})();
</script></body></html>
"""


#: Width over height of the page's drawing area, which the rows of trees are shaped to.
PAGE_ASPECT = 1.6


def to_html(graph: ModelGraph, title: str = "ancestree: Model Graph") -> str:
    """The interactive page; the graph's JSON (with layout coordinates) is embedded in it."""
    data = graph.to_dict()
    # rows of trees at least 30 models wide, wider where that keeps a big graph about the page's shape
    pos = layered_layout(graph, row_width=max(30.0, shaped_row_width(graph, PAGE_ASPECT)))
    for m in data["models"]:
        m["x"], m["y"] = pos[m["id"]]
        m["label"] = short_name(m["id"], 22)
    markers = "".join(
        f'<marker id="arrow-{rel}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto">'
        f'<path d="M0,0L10,5L0,10z" fill="{color}"/></marker>' for rel, color in COLORS.items())
    # "</" must not appear inside the inline script: escape it in the JSON
    payload = json.dumps(data).replace("</", "<\\/")
    return (PAGE.replace("__TITLE__", html.escape(title)).replace("__MARKERS__", markers)
            .replace("__COLORS__", json.dumps(COLORS)).replace("__DATA__", payload))


__all__ = ["COLORS", "to_html"]

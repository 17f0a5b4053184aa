//! The graph as a self-contained SVG, laid out by polc itself (no Graphviz
//! at run time). Identities and outside peers sit on a circle, endpoints
//! first, so every edge crosses the middle and none hides behind a box;
//! edges are curves bent to the right of their direction (so A->B and B->A
//! do not overlap) with their labels on top. Hovering an edge shows the
//! deciding rules (`<title>`).

use super::edges::{edges, Edge, EdgeKind};
use super::model::{Graph, NodeKind};
use std::collections::HashMap;
use std::f64::consts::PI;
use std::fmt::Write as _;

const FONT: &str = "DejaVu Sans, Helvetica, Arial, sans-serif";
/// Average glyph width as a fraction of the font size (generous, so text
/// fits its box in every common sans font).
const GLYPH: f64 = 0.62;
const ROW: f64 = 22.0;
const NOTE_ROW: f64 = 14.0;
const HEADER: f64 = 34.0;
const PAD: f64 = 10.0;
const LABEL_SIZE: f64 = 11.0;
const LABEL_LINE_CHARS: usize = 34;
const LABEL_LINE: f64 = 13.0;

fn text_width(text: &str, size: f64) -> f64 {
    text.chars().count() as f64 * size * GLYPH
}

#[derive(Debug, Clone, Copy)]
struct Rect {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
}

impl Rect {
    fn center(self) -> (f64, f64) {
        (self.x + self.w / 2.0, self.y + self.h / 2.0)
    }

    fn overlap_area(self, other: Rect) -> f64 {
        let w = (self.x + self.w).min(other.x + other.w) - self.x.max(other.x);
        let h = (self.y + self.h).min(other.y + other.h) - self.y.max(other.y);
        w.max(0.0) * h.max(0.0)
    }
}

/// One box on the circle: an identity (its endpoints as rows) or an outside peer.
struct Block {
    rect: Rect,
    /// Node index and the row's vertical centre, for endpoints; an outside
    /// peer has one row at its centre.
    rows: Vec<(usize, f64)>,
}

fn block_sizes(graph: &Graph) -> Vec<(Vec<usize>, f64, f64)> {
    let mut sizes = Vec::new();
    for group in &graph.groups {
        let title = format!("identity {}", group.identity.0);
        let mut width = text_width(&title, 10.0).max(text_width(&group.labels, 10.0));
        let mut height = HEADER;
        for &member in &group.members {
            let node = &graph.nodes[member];
            width = width.max(text_width(&node.label, 13.0));
            height += ROW;
            if let Some(note) = node.enforcement_note() {
                width = width.max(text_width(&note, 10.0));
                height += NOTE_ROW;
            }
        }
        sizes.push((group.members.clone(), width + 2.0 * PAD, height + PAD / 2.0));
    }
    for (index, node) in graph.nodes.iter().enumerate().filter(|(_, n)| !n.is_endpoint()) {
        let width = node.label.lines().map(|line| text_width(line, 12.0)).fold(40.0, f64::max);
        let lines = node.label.lines().count().max(1) as f64;
        sizes.push((vec![index], width + 2.0 * PAD + 8.0, 15.0 * lines + 19.0));
    }
    sizes
}

/// Ring positions for the blocks: connected blocks near each other, so
/// fewer edges cross the middle. A hill climb over swaps minimizing the
/// chord lengths of the edges (open edges count less: they are faint);
/// deterministic, and skipped for big graphs where it would be slow.
fn ring_order(sizes: &[(Vec<usize>, f64, f64)], all_edges: &[Edge]) -> Vec<usize> {
    const MAX_BLOCKS: usize = 40;
    let n = sizes.len();
    let mut order: Vec<usize> = (0..n).collect();
    if !(4..=MAX_BLOCKS).contains(&n) {
        return order;
    }
    let block_of = |node: usize| sizes.iter().position(|(members, _, _)| members.contains(&node));
    let mut weights: Vec<(usize, usize, f64)> = Vec::new();
    for edge in all_edges {
        if let (Some(a), Some(b)) = (block_of(edge.from), block_of(edge.to)) {
            let weight = if edge.kind == EdgeKind::Open { 0.25 } else { 1.0 };
            weights.push((a, b, weight));
        }
    }
    // position[block] = slot on the ring.
    let cost = |position: &[usize]| -> f64 {
        weights
            .iter()
            .map(|&(a, b, w)| {
                let d = position[a].abs_diff(position[b]) as f64;
                w * (PI * d / n as f64).sin()
            })
            .sum()
    };
    let mut position: Vec<usize> = (0..n).collect();
    let mut best = cost(&position);
    for _ in 0..50 {
        let mut improved = false;
        for i in 1..n {
            for j in (i + 1)..n {
                position.swap(i, j);
                let c = cost(&position);
                if c + 1e-9 < best {
                    best = c;
                    improved = true;
                } else {
                    position.swap(i, j);
                }
            }
        }
        if !improved {
            break;
        }
    }
    for (block, slot) in position.into_iter().enumerate() {
        order[slot] = block;
    }
    order
}

/// Boxes on a circle big enough that neighbours keep apart.
fn layout(graph: &Graph, all_edges: &[Edge]) -> Vec<Block> {
    let sizes = block_sizes(graph);
    let order = ring_order(&sizes, all_edges);
    let mut slots: Vec<Option<(Vec<usize>, f64, f64)>> = sizes.into_iter().map(Some).collect();
    let sizes: Vec<(Vec<usize>, f64, f64)> = order.iter().filter_map(|&b| slots[b].take()).collect();
    let count = sizes.len().max(1) as f64;
    let perimeter: f64 = sizes.iter().map(|(_, w, h)| w.max(*h) + 150.0).sum();
    let radius = (perimeter / (2.0 * PI)).max(170.0);
    sizes
        .into_iter()
        .enumerate()
        .map(|(i, (members, w, h))| {
            let angle = -PI / 2.0 + 2.0 * PI * i as f64 / count;
            // Wider ellipse than circle: boxes are wider than tall.
            let (cx, cy) = (1.35 * radius * angle.cos(), radius * angle.sin());
            let rect = Rect { x: cx - w / 2.0, y: cy - h / 2.0, w, h };
            let rows = if graph.nodes[members[0]].is_endpoint() {
                let mut y = rect.y + HEADER;
                members
                    .iter()
                    .map(|&m| {
                        let row = (m, y + ROW / 2.0);
                        y += ROW + if graph.nodes[m].enforcement_note().is_some() { NOTE_ROW } else { 0.0 };
                        row
                    })
                    .collect()
            } else {
                vec![(members[0], cy)]
            };
            Block { rect, rows }
        })
        .collect()
}

/// Where a ray from `inside` towards `toward` leaves `rect`.
fn exit_point(rect: Rect, inside: (f64, f64), toward: (f64, f64)) -> (f64, f64) {
    let (dx, dy) = (toward.0 - inside.0, toward.1 - inside.1);
    let limit = |d: f64, low: f64, high: f64, from: f64| {
        if d > 1e-9 {
            (high - from) / d
        } else if d < -1e-9 {
            (low - from) / d
        } else {
            f64::INFINITY
        }
    };
    let t = limit(dx, rect.x, rect.x + rect.w, inside.0).min(limit(dy, rect.y, rect.y + rect.h, inside.1));
    let t = if t.is_finite() { t } else { 0.0 };
    // A little outside the border, so arrowheads show whole.
    let length = (dx * dx + dy * dy).sqrt().max(1e-9);
    let gap = 3.0 / length;
    (inside.0 + (t + gap) * dx, inside.1 + (t + gap) * dy)
}

struct Drawn {
    path: String,
    start: (f64, f64),
    control: (f64, f64),
    end: (f64, f64),
}

impl Drawn {
    /// The point at `t` (0..1) along the curve.
    fn at(&self, t: f64) -> (f64, f64) {
        let (a, b, c) = ((1.0 - t) * (1.0 - t), 2.0 * t * (1.0 - t), t * t);
        (a * self.start.0 + b * self.control.0 + c * self.end.0, a * self.start.1 + b * self.control.1 + c * self.end.1)
    }
}

/// An edge as drawn: between two endpoints' rows, or, when it says the
/// same for every endpoint of an identity, from or to the identity's box.
struct Drawable<'e> {
    edge: &'e Edge,
    from_block: usize,
    to_block: usize,
    whole_from: bool,
    whole_to: bool,
}

/// Edges between the same two boxes that say the same for every pair of
/// their endpoints are drawn once, box to box. Edges inside one box are
/// left to the matrix.
fn drawables<'e>(blocks: &[Block], all_edges: &'e [Edge]) -> Vec<Drawable<'e>> {
    type Key<'e> = (usize, usize, EdgeKind, &'e str, bool);
    let block_of: HashMap<usize, usize> =
        blocks.iter().enumerate().flat_map(|(b, block)| block.rows.iter().map(move |(n, _)| (*n, b))).collect();
    // In first-seen order, so the drawing does not depend on hashing.
    let mut groups: Vec<Vec<&'e Edge>> = Vec::new();
    let mut group_of: HashMap<Key<'e>, usize> = HashMap::new();
    let mut keys: Vec<(usize, usize)> = Vec::new();
    for edge in all_edges {
        let (Some(&from), Some(&to)) = (block_of.get(&edge.from), block_of.get(&edge.to)) else { continue };
        if from == to {
            continue;
        }
        let key = (from, to, edge.kind, edge.label.as_str(), edge.both_ways);
        let i = *group_of.entry(key).or_insert_with(|| {
            groups.push(Vec::new());
            keys.push((from, to));
            groups.len() - 1
        });
        groups[i].push(edge);
    }
    let groups = keys.into_iter().zip(groups);
    let mut out = Vec::new();
    for ((from, to), list) in groups {
        let (from_rows, to_rows) = (blocks[from].rows.len(), blocks[to].rows.len());
        if list.len() > 1 && list.len() == from_rows * to_rows {
            let (whole_from, whole_to) = (from_rows > 1, to_rows > 1);
            out.push(Drawable { edge: list[0], from_block: from, to_block: to, whole_from, whole_to });
        } else {
            out.extend(list.into_iter().map(|edge| Drawable {
                edge,
                from_block: from,
                to_block: to,
                whole_from: false,
                whole_to: false,
            }));
        }
    }
    out
}

/// The names an edge joins: one endpoint, or every endpoint of a box.
fn end_text(graph: &Graph, block: &Block, node: usize, whole: bool) -> String {
    if whole {
        block.rows.iter().map(|(n, _)| graph.nodes[*n].one_line()).collect::<Vec<_>>().join(", ")
    } else {
        graph.nodes[node].one_line()
    }
}

fn edge_geometry(blocks: &[Block], drawable: &Drawable<'_>) -> Option<Drawn> {
    let edge = drawable.edge;
    let anchor = |block: &Block, node: usize, whole: bool| {
        let (cx, cy) = block.rect.center();
        let y = if whole { cy } else { block.rows.iter().find(|(n, _)| *n == node).map_or(cy, |(_, y)| *y) };
        (block.rect, (cx, y))
    };
    let (from_rect, a) = anchor(blocks.get(drawable.from_block)?, edge.from, drawable.whole_from);
    let (to_rect, b) = anchor(blocks.get(drawable.to_block)?, edge.to, drawable.whole_to);
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let bend = match edge.kind {
        _ if edge.both_ways => 0.0,
        EdgeKind::Denied(_) => 0.24,
        EdgeKind::Allowed | EdgeKind::Open => 0.14,
    };
    // Perpendicular to the right of the direction (screen coordinates).
    let control = ((a.0 + b.0) / 2.0 - dy * bend, (a.1 + b.1) / 2.0 + dx * bend);
    let start = exit_point(from_rect, a, control);
    let end = exit_point(to_rect, b, control);
    let path = format!("M{:.1},{:.1} Q{:.1},{:.1} {:.1},{:.1}", start.0, start.1, control.0, control.1, end.0, end.1);
    Some(Drawn { path, start, control, end })
}

/// A label's lines: its comma-separated items, packed up to a width.
fn wrap(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for item in text.split(", ") {
        match lines.last_mut() {
            Some(line) if line.chars().count() + 2 + item.chars().count() <= LABEL_LINE_CHARS => {
                line.push_str(", ");
                line.push_str(item);
            }
            _ => lines.push(item.to_string()),
        }
    }
    lines
}

/// Escapes text for XML content and attribute values.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

fn colors(kind: EdgeKind) -> (&'static str, &'static str, &'static str) {
    // (stroke, marker id, dash)
    match kind {
        EdgeKind::Allowed => ("#1f2937", "arrow-allowed", ""),
        EdgeKind::Open => ("#9ca3af", "arrow-open", ""),
        EdgeKind::Denied(_) => ("#dc2626", "arrow-denied", " stroke-dasharray=\"7 4\""),
    }
}

/// The SVG document; `title` is printed at the top (e.g. the policy path).
pub fn render(graph: &Graph, title: &str) -> String {
    let all_edges = edges(graph);
    let blocks = layout(graph, &all_edges);
    // Open edges underneath, denials on top.
    let mut ordered = drawables(&blocks, &all_edges);
    ordered.sort_by_key(|d| match d.edge.kind {
        EdgeKind::Open => 0,
        EdgeKind::Allowed => 1,
        EdgeKind::Denied(_) => 2,
    });

    let mut body = String::new();
    let mut labels: Vec<(Rect, String)> = Vec::new();
    let mut placed: Vec<Rect> = blocks.iter().map(|b| b.rect).collect();
    for drawable in &ordered {
        let edge = drawable.edge;
        let Some(drawn) = edge_geometry(&blocks, drawable) else {
            continue;
        };
        let route = format!(
            "{} → {}",
            end_text(graph, &blocks[drawable.from_block], edge.from, drawable.whole_from),
            end_text(graph, &blocks[drawable.to_block], edge.to, drawable.whole_to)
        );
        let (stroke, marker, dash) = colors(edge.kind);
        let width = if edge.kind == EdgeKind::Open { 1.2 } else { 1.8 };
        let start_marker =
            if edge.both_ways { format!(" marker-start=\"url(#{marker}-start)\"") } else { String::new() };
        let _ = writeln!(
            body,
            "<g class=\"edge\"><title>{}</title><path d=\"{}\" fill=\"none\" stroke=\"{stroke}\" stroke-width=\"{width}\"{dash} marker-end=\"url(#{marker})\"{start_marker}/></g>",
            escape(&format!("{route}\n{}", edge.detail)),
            drawn.path,
        );
        // Open edges stay unlabelled: the legend says what grey means.
        if edge.kind == EdgeKind::Open {
            continue;
        }
        let lines = wrap(&edge.label);
        let w = lines.iter().map(|l| text_width(l, LABEL_SIZE)).fold(0.0, f64::max) + 8.0;
        let h = LABEL_LINE * lines.len() as f64 + 5.0;
        // On the curve, as near its middle as it goes without covering a
        // box or another label; else nudged off the curve; else where it
        // covers least.
        let centred = |(x, y): (f64, f64), shift: f64| Rect { x: x - w / 2.0, y: y - h / 2.0 + shift, w, h };
        let along = [0.5, 0.42, 0.58, 0.34, 0.66, 0.27, 0.73].map(|t| centred(drawn.at(t), 0.0));
        let off = [1.0, -1.0, 2.0, -2.0, 3.0, -3.0].map(|step| centred(drawn.at(0.5), step * (h + 2.0)));
        let covered = |candidate: &Rect| placed.iter().map(|p| p.overlap_area(*candidate)).sum::<f64>();
        let candidates: Vec<Rect> = along.into_iter().chain(off).collect();
        let rect = candidates.iter().find(|c| covered(c) == 0.0).copied().unwrap_or_else(|| {
            candidates.iter().copied().min_by(|a, b| covered(a).total_cmp(&covered(b))).unwrap_or(candidates[0])
        });
        placed.push(rect);
        let fill = if matches!(edge.kind, EdgeKind::Denied(_)) { "#b91c1c" } else { "#111827" };
        let mut label = format!(
            "<g class=\"label\"><title>{}</title><rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" rx=\"3\" fill=\"#ffffff\" fill-opacity=\"0.92\" stroke=\"{stroke}\" stroke-width=\"0.6\"/>",
            escape(&edge.detail),
            rect.x,
            rect.y,
            rect.w,
        );
        for (i, line) in lines.iter().enumerate() {
            let _ = write!(
                label,
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"{LABEL_SIZE}\" fill=\"{fill}\" text-anchor=\"middle\">{}</text>",
                rect.x + rect.w / 2.0,
                rect.y + LABEL_LINE * (i as f64 + 1.0),
                escape(line)
            );
        }
        label.push_str("</g>");
        labels.push((rect, label));
    }

    for block in &blocks {
        body.push_str(&block_svg(graph, block));
    }
    for (_, label) in &labels {
        body.push_str(label);
        body.push('\n');
    }

    // The drawing's extent, then room for the title and the legend.
    let (mut min_x, mut min_y, mut max_x, mut max_y) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
    for rect in &placed {
        min_x = min_x.min(rect.x);
        min_y = min_y.min(rect.y);
        max_x = max_x.max(rect.x + rect.w);
        max_y = max_y.max(rect.y + rect.h);
    }
    if placed.is_empty() {
        (min_x, min_y, max_x, max_y) = (0.0, 0.0, 400.0, 100.0);
    }
    let margin = 30.0;
    let legend_width = 560.0;
    let (x0, y0) = (min_x - margin, min_y - margin - 30.0);
    let width = (max_x - min_x + 2.0 * margin).max(legend_width + 2.0 * margin);
    let height = max_y - min_y + 2.0 * margin + 30.0 + 70.0;
    let legend_y = max_y + margin;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" viewBox=\"{x0:.1} {y0:.1} {width:.1} {height:.1}\" font-family=\"{FONT}\">"
    );
    svg.push_str("<defs>\n");
    for (id, color) in [("arrow-allowed", "#1f2937"), ("arrow-open", "#9ca3af"), ("arrow-denied", "#dc2626")] {
        let _ = writeln!(
            svg,
            "<marker id=\"{id}\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"{color}\"/></marker>"
        );
        let _ = writeln!(
            svg,
            "<marker id=\"{id}-start\" viewBox=\"0 0 10 10\" refX=\"1\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\"><path d=\"M10,0 L0,5 L10,10 z\" fill=\"{color}\"/></marker>"
        );
    }
    svg.push_str("</defs>\n");
    let _ = writeln!(
        svg,
        "<rect x=\"{x0:.1}\" y=\"{y0:.1}\" width=\"{width:.1}\" height=\"{height:.1}\" fill=\"#ffffff\"/>"
    );
    let _ = writeln!(
        svg,
        "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"16\" font-weight=\"bold\" fill=\"#111827\">who may talk to whom: {}</text>",
        x0 + margin,
        y0 + 28.0,
        escape(title)
    );
    svg.push_str(&body);
    svg.push_str(&legend(x0 + margin, legend_y));
    svg.push_str("</svg>\n");
    svg
}

fn block_svg(graph: &Graph, block: &Block) -> String {
    let mut out = String::new();
    let r = block.rect;
    let (cx, _) = r.center();
    let first = &graph.nodes[block.rows[0].0];
    if first.is_endpoint() {
        let group = graph.groups.iter().find(|g| g.members.contains(&block.rows[0].0));
        let (title, labels) =
            group.map_or((String::new(), String::new()), |g| (format!("identity {}", g.identity.0), g.labels.clone()));
        let _ = writeln!(
            out,
            "<g class=\"identity\"><title>{}</title><rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" rx=\"8\" fill=\"#f4f6fb\" stroke=\"#8a94a6\"/>",
            escape(&format!("{title} {labels}")),
            r.x,
            r.y,
            r.w,
            r.h
        );
        let _ = writeln!(out, "<text x=\"{cx:.1}\" y=\"{:.1}\" font-size=\"10\" fill=\"#4b5563\" text-anchor=\"middle\" font-weight=\"bold\">{}</text>", r.y + 13.0, escape(&title));
        let _ = writeln!(
            out,
            "<text x=\"{cx:.1}\" y=\"{:.1}\" font-size=\"10\" fill=\"#4b5563\" text-anchor=\"middle\">{}</text>",
            r.y + 26.0,
            escape(&labels)
        );
        for &(member, y) in &block.rows {
            let node = &graph.nodes[member];
            let note = node.enforcement_note();
            let height = ROW - 4.0 + if note.is_some() { NOTE_ROW } else { 0.0 };
            let dash = if note.is_some() { " stroke-dasharray=\"4 3\"" } else { "" };
            let _ = writeln!(
                out,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{height:.1}\" rx=\"5\" fill=\"#ffffff\" stroke=\"#374151\"{dash}/>",
                r.x + 5.0,
                y - ROW / 2.0 + 2.0,
                r.w - 10.0
            );
            let _ = writeln!(out, "<text x=\"{cx:.1}\" y=\"{:.1}\" font-size=\"13\" font-weight=\"bold\" fill=\"#111827\" text-anchor=\"middle\">{}</text>", y + 4.5, escape(&node.label));
            if let Some(note) = note {
                let _ = writeln!(out, "<text x=\"{cx:.1}\" y=\"{:.1}\" font-size=\"10\" font-style=\"italic\" fill=\"#b45309\" text-anchor=\"middle\">{}</text>", y + 17.0, escape(&note));
            }
        }
        out.push_str("</g>\n");
    } else {
        let (fill, kind) = match first.kind {
            NodeKind::Host => ("#fef3c7", "the node"),
            NodeKind::World { .. } => ("#dbeafe", "outside the cluster"),
            _ => ("#e0f2fe", "a CIDR written in the policy"),
        };
        let _ = writeln!(
            out,
            "<g class=\"peer\"><title>{}: {kind}</title><rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" rx=\"17\" fill=\"{fill}\" stroke=\"#6b7280\"/>",
            escape(&first.one_line()),
            r.x,
            r.y,
            r.w,
            r.h,
        );
        for (i, line) in first.label.lines().enumerate() {
            let y = r.y + 22.0 + 15.0 * i as f64;
            let _ = writeln!(
                out,
                "<text x=\"{cx:.1}\" y=\"{y:.1}\" font-size=\"12\" fill=\"#111827\" text-anchor=\"middle\">{}</text>",
                escape(line)
            );
        }
        out.push_str("</g>\n");
    }
    out
}

fn legend(x: f64, y: f64) -> String {
    let mut out = String::from("<g class=\"legend\" font-size=\"11\" fill=\"#374151\">\n");
    let items = [
        ("#1f2937", "", "allowed, labelled with what (hover: the deciding rules)"),
        ("#dc2626", " stroke-dasharray=\"7 4\"", "denied by the named deny rule"),
        ("#9ca3af", "", "open: no side enforces it, anything passes"),
    ];
    for (i, (color, dash, text)) in items.iter().enumerate() {
        let row_y = y + 14.0 + 16.0 * i as f64;
        let _ = writeln!(
            out,
            "<line x1=\"{x:.1}\" y1=\"{row_y:.1}\" x2=\"{:.1}\" y2=\"{row_y:.1}\" stroke=\"{color}\" stroke-width=\"2\"{dash}/><text x=\"{:.1}\" y=\"{:.1}\">{text}</text>",
            x + 36.0,
            x + 44.0,
            row_y + 4.0
        );
    }
    let _ = writeln!(
        out,
        "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"36\" height=\"12\" rx=\"3\" fill=\"#ffffff\" stroke=\"#374151\" stroke-dasharray=\"4 3\"/><text x=\"{:.1}\" y=\"{:.1}\">dashed box: an endpoint with a direction no policy enforces</text>",
        y + 56.0,
        x + 44.0,
        y + 66.0
    );
    out.push_str("</g>\n");
    out
}

//! The Kubernetes API server's runtime cost of a CEL expression, computed:
//! neither the `cel` crate nor cel-python reports a cost, so this evaluates
//! the expression tree the `cel` crate parses (the same macro expansions as
//! cel-go: `all`, `exists` and `map` become comprehensions over `@result`)
//! and charges what cel-go's `CostObserver` (interpreter/runtimecost.go,
//! which the API server runs for `matchConditions`) charges:
//!
//! - 1 per identifier or variable (`object`, `c`, `@result`), plus 1 per field
//!   selected or constant index (`object.spec.containers` costs 3);
//! - `has(x.f)`: the operand, plus 1;
//! - constants, `&&`, `||`, `? :`, and the comprehension itself: nothing (only
//!   what they evaluate, short-circuited as cel-go does);
//! - a list literal: 10 (`ListCreateBaseCost`), plus its elements;
//! - calls: `startsWith` ⌈0.1·len(receiver)⌉; `in` on a list: its length;
//!   `==`/`!=` ⌈0.1·min(size)⌉ (size: a string's length, a list's or map's
//!   element count, else 1); string `+` ⌈0.1·(len a + len b)⌉; `matches`
//!   ⌈0.1·(1 + len)⌉ · ⌈0.25·len(pattern)⌉; anything else (`!`,
//!   `@not_strictly_false`, list `+`, `in` on a map): 1.
//!
//! The evaluator covers the CEL the generated conditions and the exclusions
//! use; anything else is an error, so a new construct cannot be costed
//! silently wrong. Its boolean results are checked against the `cel` crate's
//! own evaluation by the caller.

use cel::common::ast::{Expr, IdedExpr, LiteralValue};
use serde_json::Value;

/// cel-go's `common.ListCreateBaseCost`.
const LIST_CREATE_COST: u64 = 10;
/// cel-go's `common.StringTraversalCostFactor`.
const STRING_TRAVERSAL_FACTOR: f64 = 0.1;
/// cel-go's `common.RegexStringLengthCostFactor`.
const REGEX_LENGTH_FACTOR: f64 = 0.25;

/// The value and the cost of `expression` with the variables `roots`.
pub fn evaluate(expression: &IdedExpr, roots: &[(&str, &Value)]) -> Result<(Value, u64), String> {
    let mut evaluator = Evaluator {
        scopes: roots
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).clone()))
            .collect(),
        cost: 0,
    };
    let value = evaluator.eval(expression)?;
    Ok((value, evaluator.cost))
}

struct Evaluator {
    /// Innermost last: comprehension variables shadow the roots.
    scopes: Vec<(String, Value)>,
    cost: u64,
}

fn size(value: &Value) -> u64 {
    match value {
        Value::String(s) => s.chars().count() as u64,
        Value::Array(a) => a.len() as u64,
        Value::Object(o) => o.len() as u64,
        _ => 1,
    }
}

fn traversal(units: u64, factor: f64) -> u64 {
    (units as f64 * factor).ceil() as u64
}

fn string(value: &Value) -> Result<&str, String> {
    value.as_str().ok_or_else(|| format!("not a string: {value}"))
}

fn boolean(value: &Value) -> Result<bool, String> {
    value.as_bool().ok_or_else(|| format!("not a bool: {value}"))
}

impl Evaluator {
    fn eval(&mut self, e: &IdedExpr) -> Result<Value, String> {
        match &e.expr {
            Expr::Literal(literal) => Ok(match literal {
                LiteralValue::Boolean(b) => Value::Bool(**b),
                LiteralValue::String(s) => Value::String(s.inner().to_owned()),
                LiteralValue::Null => Value::Null,
                LiteralValue::Int(i) => Value::from(**i),
                other => return Err(format!("literal {other:?}")),
            }),
            Expr::Ident(name) => {
                self.cost += 1;
                self.scopes
                    .iter()
                    .rev()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| format!("no variable {name}"))
            }
            Expr::Select(select) => {
                let operand = self.eval(&select.operand)?;
                self.cost += 1;
                let field = operand.as_object().and_then(|o| o.get(&select.field));
                if select.test {
                    Ok(Value::Bool(field.is_some_and(|v| !v.is_null())))
                } else {
                    field.cloned().ok_or_else(|| format!("no field {}", select.field))
                }
            }
            Expr::List(list) => {
                let elements = list
                    .elements
                    .iter()
                    .map(|x| self.eval(x))
                    .collect::<Result<Vec<_>, _>>()?;
                self.cost += LIST_CREATE_COST;
                Ok(Value::Array(elements))
            }
            Expr::Comprehension(c) => {
                let range = self.eval(&c.iter_range)?;
                let items = range.as_array().ok_or("comprehension over a non-list")?.clone();
                let mut accu = self.eval(&c.accu_init)?;
                for item in items {
                    self.scopes.push((c.accu_var.clone(), accu.clone()));
                    self.scopes.push((c.iter_var.clone(), item));
                    let go_on = boolean(&self.eval(&c.loop_cond)?)?;
                    if go_on {
                        accu = self.eval(&c.loop_step)?;
                    }
                    self.scopes.truncate(self.scopes.len() - 2);
                    if !go_on {
                        break;
                    }
                }
                self.scopes.push((c.accu_var.clone(), accu));
                let result = self.eval(&c.result);
                self.scopes.pop();
                result
            }
            Expr::Call(call) => self.call(&call.func_name, call.target.as_deref(), &call.args),
            other => Err(format!("expression {other:?}")),
        }
    }

    fn call(&mut self, name: &str, target: Option<&IdedExpr>, args: &[IdedExpr]) -> Result<Value, String> {
        match (name, args) {
            ("_&&_", [a, b]) => Ok(Value::Bool(boolean(&self.eval(a)?)? && boolean(&self.eval(b)?)?)),
            ("_||_", [a, b]) => Ok(Value::Bool(boolean(&self.eval(a)?)? || boolean(&self.eval(b)?)?)),
            ("_?_:_", [condition, yes, no]) => {
                if boolean(&self.eval(condition)?)? {
                    self.eval(yes)
                } else {
                    self.eval(no)
                }
            }
            ("_[_]", [operand, index]) => {
                let (operand, index) = (self.eval(operand)?, self.eval(index)?);
                self.cost += 1;
                let key = string(&index)?;
                operand.get(key).cloned().ok_or_else(|| format!("no key {key}"))
            }
            _ => {
                let receiver = target.map(|t| self.eval(t)).transpose()?;
                let values = args.iter().map(|a| self.eval(a)).collect::<Result<Vec<_>, _>>()?;
                let (result, cost) = apply(name, receiver.as_ref(), &values)?;
                self.cost += cost;
                Ok(result)
            }
        }
    }
}

/// A function's result and its cel-go cost.
fn apply(name: &str, receiver: Option<&Value>, args: &[Value]) -> Result<(Value, u64), String> {
    Ok(match (name, receiver, args) {
        ("!_", None, [a]) => (Value::Bool(!boolean(a)?), 1),
        ("@not_strictly_false", None, [a]) => (Value::Bool(a.as_bool() != Some(false)), 1),
        ("_==_" | "_!=_", None, [a, b]) => {
            let equal = a == b;
            let cost = traversal(size(a).min(size(b)), STRING_TRAVERSAL_FACTOR);
            (Value::Bool(if name == "_==_" { equal } else { !equal }), cost)
        }
        ("@in", None, [item, Value::Array(list)]) => (Value::Bool(list.contains(item)), list.len() as u64),
        ("@in", None, [key, Value::Object(map)]) => (Value::Bool(map.contains_key(string(key)?)), 1),
        ("_+_", None, [Value::String(a), Value::String(b)]) => (
            Value::String(format!("{a}{b}")),
            traversal(size(&args[0]) + size(&args[1]), STRING_TRAVERSAL_FACTOR),
        ),
        ("_+_", None, [Value::Array(a), Value::Array(b)]) => {
            (Value::Array(a.iter().chain(b).cloned().collect()), 1)
        }
        ("startsWith", Some(s), [prefix]) => (
            Value::Bool(string(s)?.starts_with(string(prefix)?)),
            traversal(size(s), STRING_TRAVERSAL_FACTOR),
        ),
        ("matches", Some(s), [pattern]) => {
            let cost = traversal(1 + size(s), STRING_TRAVERSAL_FACTOR)
                * traversal(size(pattern), REGEX_LENGTH_FACTOR);
            (Value::Bool(matches(s, pattern)?), cost)
        }
        _ => return Err(format!("function {name} on {receiver:?} {args:?}")),
    })
}

/// `s.matches(pattern)` as the `cel` crate (RE2 syntax, as cel-go) decides it.
fn matches(s: &Value, pattern: &Value) -> Result<bool, String> {
    thread_local! {
        static PROGRAM: cel::Program = cel::Program::compile("s.matches(p)").expect("compiles");
    }
    let mut context = cel::Context::default();
    context.add_variable_from_value("s", cel::to_value(s).map_err(|e| e.to_string())?);
    context.add_variable_from_value("p", cel::to_value(pattern).map_err(|e| e.to_string())?);
    match PROGRAM.with(|program| program.execute(&context)) {
        Ok(cel::Value::Bool(b)) => Ok(b),
        other => Err(format!("matches gave {other:?}")),
    }
}

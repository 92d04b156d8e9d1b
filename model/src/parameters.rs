//! Flattening the network's gradient-trained parameters to named `f32` vectors and writing them
//! back, for the federation: clients send deltas of these, the coordinator averages them.
//!
//! Parameters are keyed by their path in the module tree (for example
//! `fusions.0.scales.1.query.weight`), never by `ParamId`, which is random per process. Values are
//! taken after `transform_for_save` so transposed layouts come out canonical, and written back with
//! `transform_for_load` keeping each parameter's id, so an optimizer's state survives a load.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Tensor, TensorData};
use thiserror::Error;

use mpcl_protocol::{F32Vec, NamedTensor, ParameterSet, ParameterSetError};

use crate::network::prototypes::tensor_to_vec;

/// A parameter set that does not fit the network.
#[derive(Debug, Error, PartialEq)]
pub enum ParameterLoadError {
    #[error("parameters do not fit the network: {0}")]
    Layout(#[from] ParameterSetError),
}

/// Tracks the module path while visiting or mapping.
#[derive(Default)]
struct PathTracker {
    path: Vec<String>,
}

impl PathTracker {
    fn enter(&mut self, name: &str) {
        self.path.push(name.to_string());
    }

    fn exit(&mut self) {
        self.path.pop();
    }

    fn current(&self) -> String {
        self.path.join(".")
    }
}

struct Flattener {
    path: PathTracker,
    tensors: Vec<NamedTensor>,
}

impl ModuleVisitor for Flattener {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.enter(name);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let tensor = param.transform_for_save().val();
        self.tensors.push(NamedTensor {
            name: self.path.current(),
            shape: tensor.dims().to_vec(),
            values: F32Vec(tensor_to_vec(tensor)),
        });
    }
}

/// The network's gradient-trained parameters, in module order.
pub fn flatten_parameters<M: Module>(module: &M) -> ParameterSet {
    let mut flattener = Flattener {
        path: PathTracker::default(),
        tensors: Vec::new(),
    };
    module.visit(&mut flattener);
    ParameterSet {
        tensors: flattener.tensors,
    }
}

/// Writes a parameter set into a module, checking its layout on the way (names and shapes;
/// reading the module's values back only to compare layouts cost a copy of every parameter per
/// load, about 2% of a simulation).
struct Loader<'a> {
    path: PathTracker,
    source: &'a ParameterSet,
    /// The module's parameters seen so far.
    next: usize,
    /// The first name or shape that differs from the module's, in module order; parameters
    /// from there on keep their values.
    mismatch: Option<ParameterSetError>,
}

impl ModuleMapper for Loader<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.enter(name);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let index = self.next;
        self.next += 1;
        let Some(named) = self.source.tensors.get(index) else {
            return param;
        };
        if self.mismatch.is_some() {
            return param;
        }
        let name = self.path.current();
        if named.name != name {
            self.mismatch = Some(ParameterSetError::NameMismatch {
                index,
                expected: name,
                found: named.name.clone(),
            });
            return param;
        }
        let shape = param.transform_for_save().val().dims().to_vec();
        if named.shape != shape {
            self.mismatch = Some(ParameterSetError::ShapeMismatch {
                name,
                expected: shape,
                found: named.shape.clone(),
            });
            return param;
        }
        let device = param.lazy_device();
        let tensor = Tensor::from_data(
            TensorData::new(named.values.0.clone(), named.shape.clone()),
            &device,
        );
        let id = param.id;
        param.transform_for_load(tensor, id)
    }
}

/// Writes `parameters` into `module`. The layout (names, shapes, order) must match the module's
/// own and every value must be finite.
pub fn load_parameters<M: Module>(
    module: M,
    parameters: &ParameterSet,
) -> Result<M, ParameterLoadError> {
    parameters.validate()?;
    let mut loader = Loader {
        path: PathTracker::default(),
        source: parameters,
        next: 0,
        mismatch: None,
    };
    let module = module.map(&mut loader);
    // As `ParameterSet::check_same_layout`: a count that differs first, then the first name or
    // shape.
    if loader.next != parameters.tensors.len() {
        return Err(ParameterSetError::CountMismatch {
            expected: loader.next,
            found: parameters.tensors.len(),
        }
        .into());
    }
    match loader.mismatch {
        Some(mismatch) => Err(mismatch.into()),
        None => Ok(module),
    }
}

struct ProximalTerm<'a> {
    path: PathTracker,
    reference: &'a ParameterSet,
    next: usize,
    sum: Option<Tensor<1>>,
}

impl ModuleVisitor for ProximalTerm<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.enter(name);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let named = &self.reference.tensors[self.next];
        self.next += 1;
        let value = param.val();
        let reference: Tensor<D> = Tensor::from_data(
            TensorData::new(named.values.0.clone(), named.shape.clone()),
            &value.device(),
        );
        let term = (value - reference).square().sum();
        self.sum = Some(match self.sum.take() {
            Some(sum) => sum + term,
            None => term,
        });
    }
}

/// FedProx's `||w - w_global||^2` as a differentiable scalar (`None` for a module without
/// parameters). `reference` must have the module's layout (checked by the caller once per round).
pub fn squared_distance_to<M: Module>(module: &M, reference: &ParameterSet) -> Option<Tensor<1>> {
    let mut term = ProximalTerm {
        path: PathTracker::default(),
        reference,
        next: 0,
        sum: None,
    };
    module.visit(&mut term);
    term.sum
}

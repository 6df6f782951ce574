//! CMA-ES with ask/tell, box bounds, separable and margin variants, IPOP restarts and exactly
//! resumable state. It knows nothing about models.

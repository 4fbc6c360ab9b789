//! Rendering a window into memory with Slint's software renderer: no GPU, no display server.
//! The screenshot tests and the benchmark draw the app's real screens this way.

#![forbid(unsafe_code)]

use slint::platform::software_renderer::{MinimalSoftwareWindow, RepaintBufferType};
use slint::platform::{Platform, PlatformError, WindowAdapter};
use slint::{PhysicalSize, Rgb8Pixel};
use std::rc::Rc;

/// A platform whose one window renders into memory, with a clock that stands still (no
/// animation is caught half-way).
struct Offscreen {
    window: Rc<MinimalSoftwareWindow>,
}

impl Platform for Offscreen {
    fn create_window_adapter(&self) -> Result<Rc<dyn WindowAdapter>, PlatformError> {
        Ok(self.window.clone())
    }

    fn duration_since_start(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

/// Makes this thread's Slint platform one offscreen window of `width`×`height` pixels, and
/// returns it. Call before creating any window.
pub fn install(width: u32, height: u32) -> Result<Rc<MinimalSoftwareWindow>, String> {
    let window = MinimalSoftwareWindow::new(RepaintBufferType::NewBuffer);
    window.set_size(PhysicalSize::new(width, height));
    slint::platform::set_platform(Box::new(Offscreen {
        window: window.clone(),
    }))
    .map_err(|e| format!("cannot install the offscreen platform: {e}"))?;
    Ok(window)
}

/// Draws the window's current state into a new `width`×`height` pixel buffer.
pub fn render(window: &MinimalSoftwareWindow, width: u32, height: u32) -> Vec<Rgb8Pixel> {
    let mut pixels = vec![Rgb8Pixel::new(0, 0, 0); (width as usize) * (height as usize)];
    window.request_redraw();
    slint::platform::update_timers_and_animations();
    window.draw_if_needed(|renderer| {
        renderer.render(&mut pixels, width as usize);
    });
    pixels
}

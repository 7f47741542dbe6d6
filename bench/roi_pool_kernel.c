/* torchvision's CPU kernels for roi_pool (torchvision/csrc/ops/cpu/
 * roi_pool_kernel.cpp), transcribed to C for float32, NCHW: the reference
 * that bench/roi.py times jaxpool.roi_pool against. torchvision's own C++
 * ops do not load beside the CPU build of torch (tests/torchvision_cpu.py).
 * The same loops: per box, bin and channel a scan of the bin's cells for the
 * first greatest (from -FLT_MAX); the backward adds each output's gradient
 * at that cell. Built by bench/roi.py with the system C compiler (-O3). */
#include <float.h>
#include <math.h>

static int clamp(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

void roi_pool_forward(const float *input, float scale, int channels, int height,
                      int width, int pooled_h, int pooled_w, const float *rois,
                      int num_rois, float *output, int *argmax) {
  for (int n = 0; n < num_rois; ++n) {
    const float *roi = rois + n * 5;
    int b = (int)roi[0];
    int start_w = (int)roundf(roi[1] * scale), start_h = (int)roundf(roi[2] * scale);
    int end_w = (int)roundf(roi[3] * scale), end_h = (int)roundf(roi[4] * scale);
    int roi_w = end_w - start_w + 1 > 1 ? end_w - start_w + 1 : 1;
    int roi_h = end_h - start_h + 1 > 1 ? end_h - start_h + 1 : 1;
    float bin_h = (float)roi_h / (float)pooled_h, bin_w = (float)roi_w / (float)pooled_w;
    for (int ph = 0; ph < pooled_h; ++ph) {
      for (int pw = 0; pw < pooled_w; ++pw) {
        int hs = clamp((int)floorf((float)ph * bin_h) + start_h, 0, height);
        int he = clamp((int)ceilf((float)(ph + 1) * bin_h) + start_h, 0, height);
        int ws = clamp((int)floorf((float)pw * bin_w) + start_w, 0, width);
        int we = clamp((int)ceilf((float)(pw + 1) * bin_w) + start_w, 0, width);
        int empty = he <= hs || we <= ws;
        for (int c = 0; c < channels; ++c) {
          const float *plane = input + ((long)b * channels + c) * height * width;
          float best = empty ? 0.0f : -FLT_MAX;
          int at = -1;
          for (int h = hs; h < he; ++h)
            for (int w = ws; w < we; ++w)
              if (plane[h * width + w] > best) {
                best = plane[h * width + w];
                at = h * width + w;
              }
          long out = (((long)n * channels + c) * pooled_h + ph) * pooled_w + pw;
          output[out] = best;
          argmax[out] = at;
        }
      }
    }
  }
}

void roi_pool_backward(const float *grad, const int *argmax, int num_rois,
                       int channels, int height, int width, int pooled_h,
                       int pooled_w, float *grad_input, const float *rois) {
  for (int n = 0; n < num_rois; ++n) {
    int b = (int)rois[n * 5];
    for (int c = 0; c < channels; ++c) {
      float *plane = grad_input + ((long)b * channels + c) * height * width;
      long base = ((long)n * channels + c) * pooled_h * pooled_w;
      for (int p = 0; p < pooled_h * pooled_w; ++p)
        if (argmax[base + p] != -1) plane[argmax[base + p]] += grad[base + p];
    }
  }
}
